"""A local imitation of the licensed sources, with a call log that holds no personal data.
Imports nothing of ours: its signature check is an independent implementation of the contract."""
