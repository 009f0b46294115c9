"""MLflow "models from code" entry of the pyfunc model of every registry version (full and
delta, see `version_model.py`). MLflow runs this file when it loads the model; nothing else
imports it (it registers the model object on execution)."""

from mlflow.models import set_model

from stages.publish.pyfunc_model import FreshrecPyfunc

set_model(FreshrecPyfunc())
