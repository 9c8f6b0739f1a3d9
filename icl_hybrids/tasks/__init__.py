"""Task registry. Adding a task = one class here (subclass of Task) + one YAML in conf/task/."""
from .base import Batch, Task
from .mqar import VectorMQAR
from .parity import SparseParity
from .regression import DecisionTree, LinearRegression, MLPRegression, SparseLinearRegression

__all__ = ["Batch", "Task", "LinearRegression", "SparseLinearRegression", "MLPRegression",
           "DecisionTree", "SparseParity", "VectorMQAR"]
