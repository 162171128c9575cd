"""Background processes: RQ jobs (transcription, retention) and the dispatcher."""
