"""The People's Response line's domain: calls, callers, the IVR's decisions, the
queue and the stores, configuration. Imported by agi/, workers/, web/ and the
stand-in; imports none of them."""
