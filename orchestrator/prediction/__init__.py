"""Resource prediction: per-task runtime/cpu/memory quantiles (LSTM over a category's history, with
baselines), a cluster-demand forecaster, capacity and cost planning, and right-sizing of requests."""

from .config import PredictionConfig, load_config
from .features import Execution, History, TaskFeatures
from .predictor import LSTMTaskPredictor, Prediction, Predictor, Quantiles

__all__ = ["PredictionConfig", "load_config", "Execution", "History", "TaskFeatures", "LSTMTaskPredictor",
           "Prediction", "Predictor", "Quantiles"]
