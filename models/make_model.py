"""Train the example model and export it to ONNX in the form tract runs.

The model: scikit-learn's `digits` data set (8x8 images of handwritten
digits, 64 features in 0..16), a StandardScaler then an MLP with one hidden
layer of 64 ReLU units and a softmax over the 10 digits.

    python3 -m venv venv && venv/bin/pip install scikit-learn skl2onnx onnx onnxruntime
    venv/bin/python models/make_model.py

Writes models/digits_mlp.onnx and models/digits_fixture.json: a few input
rows with the probabilities onnxruntime computes for them, which the Rust
tests compare against (so CI never needs Python).

tract lacks `ai.onnx.ml.Scaler` and `ZipMap`, hence the export options:
`div` turns the scaler into Sub/Div, `zipmap: False` keeps a plain tensor.
"""
import json
import os

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))

X, y = load_digits(return_X_y=True)
X = X.astype(np.float32)
scaler = StandardScaler()
clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=400, random_state=7)
pipe = make_pipeline(scaler, clf).fit(X[:1500], y[:1500])
print("held-out accuracy:", pipe.score(X[1500:], y[1500:]))

onx = to_onnx(
    pipe,
    X[:1],
    options={id(clf): {"zipmap": False, "nocl": True}, id(scaler): {"div": "div"}},
    target_opset={"": 17, "ai.onnx.ml": 3},
)
path = os.path.join(HERE, "digits_mlp.onnx")
with open(path, "wb") as f:
    f.write(onx.SerializeToString())

sess = ort.InferenceSession(path)
rows = X[1500:1508]
label, probs = sess.run(None, {sess.get_inputs()[0].name: rows})
fixture = {
    "input_name": sess.get_inputs()[0].name,
    "outputs": [o.name for o in sess.get_outputs()],
    "rows": rows.tolist(),
    "labels": [int(v) for v in label],
    "probabilities": probs.tolist(),
}
with open(os.path.join(HERE, "digits_fixture.json"), "w") as f:
    json.dump(fixture, f, indent=1)
print("wrote", path, os.path.getsize(path), "bytes")

# The whole data set for the demo: per row 64 feature bytes (values 0..16)
# then the label byte; 1797 rows, 65 bytes each.
data = np.concatenate([X.astype(np.uint8), y.astype(np.uint8)[:, None]], axis=1)
with open(os.path.join(HERE, "digits.bin"), "wb") as f:
    f.write(data.tobytes())
