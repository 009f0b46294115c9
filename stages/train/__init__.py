"""The train stage: the resident trainer around the TensorFlow/Horovod engine.

Entrypoints: `stages.train.loop.run_trainer` and the command `freshrec train`. The pure core
(window policy, progressive metrics, the Engine protocol) is `stages.train.core`; the adapters
are `store` (Redis), `tracking` (MLflow), `checkpoint` (files), `replay` (files in the
schema's format), and `engine` (TensorFlow, Horovod). Nothing is imported here, so
`import stages.train` is cheap.
"""
