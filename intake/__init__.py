"""Intake: batch files read line by line into validated, frozen applicant lines or refusals."""
