"""RERS (reflection-enhanced reasoning sampling): diagnostic trajectories without annotation.

Modules: reflection (the feedback turn), filters (keep rules and their verdicts), synthesize
(sample → grade → reflect → filter, chunked and resumable), report (coverage, yield, rejection
reasons) and stage (the 'rers' pipeline stage; imports TensorFlow through the data builders).
Importing this package imports nothing.
"""
