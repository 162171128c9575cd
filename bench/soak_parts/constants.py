"""The soak's fixed numbers and texts: the Redis service, the callers' keys and numbers, the
responders' phone behaviours, how long people talk and wait, and the run's timings."""

SERVICE = "pr-soak"
SECRET = "soak-secret-0123456789"
TIME_SCALE = 1.0
KEYS = ("2 02121 2", "1 02124 2", "1 02119 2", "2 02124 2")  # language, ZIP, no message
CALLBACK_KEYS = "1 1 1"  # call me back, this number is safe, a message is fine
AREAS = ("617", "857", "781", "339", "508", "978")
# (behaviour, weight); "answer" and "answer-late" get a random ring time.
BEHAVIOURS = (("answer", 70), ("answer-late", 8), ("decline", 7), ("never", 6),
              ("voicemail", 4), ("hangup-in-whisper", 2), ("busy", 3))
CALLEE = "answer:3"  # a caller's own phone, when the line calls them back
TALK_S = (20.0, 120.0)
PATIENCE_S = (60.0, 300.0)
CALLBACK_SHARE = 0.3
RESHUFFLE_S = 60.0
SAMPLE_S = 0.25
DRAIN_S = 240.0
DRAIN_TALK_S = 3.0
LIVE_REPORTS = 3  # double-bookings printed as they happen
DETAILS = 5  # lost calls and double-bookings explained at the end, each
STUCK_S = 90.0  # the drain ends early when nothing changed for this long
FINAL = {"ended", "abandoned", "fallback", "callback", "callback_failed", "cancelled"}
OUTCOMES = ("bridged", "callback", "fallback", "abandoned")
