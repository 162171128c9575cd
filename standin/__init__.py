"""A protocol-faithful stand-in for Asterisk 22 (no Asterisk runs on these machines).

It places scripted callers through our real dialplan (dialplan/extensions.conf) and
connects to our FastAGI server exactly as Asterisk does on the wire; checked against
res/res_agi.c and the recorded exchanges in the shared reference captures.
"""

from standin.caller import CallerScript, parse_keys
from standin.channel import AgiTranscript, CallTrace, Channel
from standin.pbx import Room, StandinPBX, run_call

__all__ = [
    "AgiTranscript",
    "CallTrace",
    "CallerScript",
    "Channel",
    "Room",
    "StandinPBX",
    "parse_keys",
    "run_call",
]
