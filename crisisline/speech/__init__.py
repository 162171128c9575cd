"""Speech: Vosk models per language and transcription of recorded caller messages.

Nothing here talks to Redis or RQ; the workers package does that.
"""
