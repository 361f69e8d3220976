"""Derives the query model from the embedding model: the same network with its activations
quantised to int8 at run time as well as its weights, so that one short query embeds in about
a third of the time (ONNX Runtime's integer matrix products), at a cosine of about 0.99 to the
embedding model's own vector for the same text.

ONNX Runtime first folds the model's constant weight arithmetic (the shipped model stores int8
weights and rescales them in the graph), so that the quantiser finds plain weight matrices;
weights are then quantised per output channel, which keeps the vectors close.

usage: derive-query-model.py MODEL OUT"""
import logging
import os
import sys
import tempfile

import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

# The quantiser advises a pre-processing pass on the root logger; the folding above is ours.
logging.getLogger().setLevel(logging.ERROR)
model, out = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    folded = os.path.join(tmp, "folded.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = folded
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    quantize_dynamic(folded, out, weight_type=QuantType.QInt8, per_channel=True)
