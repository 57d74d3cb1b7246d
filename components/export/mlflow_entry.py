"""MLflow's entry point into a registered version (MLflow's "models from code"): MLflow runs this file
when it loads the model, so a version carries code, never a pickle. It is not imported anywhere else."""

from mlflow.models import set_model

from components.export.pyfunc import TunegatePyfunc

set_model(TunegatePyfunc())
