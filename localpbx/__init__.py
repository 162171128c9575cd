"""The real Asterisk on this machine: where `scripts/install-asterisk` put it, our
configuration rendered for it (by asterisk/entrypoint.sh, as in the container), the
process, and a second Asterisk that plays the outside world (callers over SIP trunks,
responders' mobiles, the fallback desk) for `up`, `simulate`, the tests and benchmarks.

Nothing in crisisline/ imports this package: it is plumbing around the PBX, like standin/.
"""
