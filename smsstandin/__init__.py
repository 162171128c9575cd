"""A stand-in for the SMS provider, speaking its real wire format (Twilio's convention), for
``up``, ``simulate`` and the tests, as standin/ stands in for Asterisk.

Toward the line it is the provider:

- ``POST /2010-04-01/Accounts/{account}/Messages.json`` (form ``To``, ``From``, ``Body``;
  HTTP basic auth account:token) takes a text the line sends; answers 201 with JSON
  (``sid``, ``status: queued``, ...), 401 without the right credentials, 400 (code 21602 /
  21604) without a body or a recipient;
- a texter's text reaches the line as a form-encoded POST to the line's webhook with
  ``MessageSid``, ``From``, ``To``, ``Body`` (and the provider's other fields), signed in
  ``X-Twilio-Signature`` (HMAC-SHA1 with the auth token over the URL and the sorted
  parameters, base64), computed here independently of the line's own check.

Toward people it plays the phones: texters (``POST /standin/texts``: text the line from a
number, optionally reusing a MessageSid as a provider retry does) and responders, whose
behaviour toward an offer (a text with a one-time link) is scripted like the Asterisk
stand-in's phones: ``answer:SECONDS`` (opens the link after SECONDS, takes it, writes a
greeting; ends it after ``talk`` seconds when set), ``decline`` (opens, passes), ``never``
(ignores it), ``voicemail`` / ``hangup-in-whisper`` (opens it and leaves it). Times are
scaled by ``time_scale`` (PR_STANDIN_TIME_SCALE).

Control API (stand-in only, bound to 127.0.0.1): ``POST /standin/texts``,
``GET /standin/messages?to=NUMBER&after=N``, ``POST /standin/phones`` (``Default``,
``Phone=number=behaviour``, ``Talk``).
"""
