from .baselines import DivergedError, he_init_, train_sgd
from .evaluate import bn_eval_mode, calibrate_bn, evaluate, mean_sem

__all__ = ['evaluate', 'calibrate_bn', 'bn_eval_mode', 'mean_sem', 'he_init_', 'train_sgd', 'DivergedError']
