"""Rules as data and the pure functions that evaluate them. No I/O, imports nothing of ours."""
