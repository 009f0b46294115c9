"""The pure core of the publish stage: no MLflow, no HTTP, no files, no clock.

`merge`: folding trainer exports into the next registry version (delta merging).
`plan`: full-or-delta decisions, the version tags, the quality gate, the serving chain.
`requests`: parsing prediction requests into model inputs, with 4xx reasons.
`metrics`: AUC, logloss, NE and calibration of predictions.
`freshness`: event-to-servable latencies from alias observations.
"""
