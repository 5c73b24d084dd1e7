import os
import sys

# Tests import the top-level modules (datasets, genre, baselines, evaluate) directly.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
