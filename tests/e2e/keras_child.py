"""Child of test_onnx.py's Keras test (TensorFlow stays out of the pytest process): a Keras CNN
converted by tf2onnx, a SoftmaxCrossEntropyLoss appended to the ONNX graph, trained by
tilegraph's TrainingSession; the same model trained by Keras (SGD, the same batches).
Prints one JSON line: per-step losses of both and the largest relative weight differences."""
import json
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import tilegraph.onnx as tgx  # noqa: E402

B, STEPS, LR, CLASSES = 8, 5, 0.1, 5


def build():
    tf.keras.utils.set_random_seed(0)
    init = tf.keras.initializers.RandomNormal(stddev=0.1, seed=1)  # nonzero: kept by tf2onnx
    inp = tf.keras.Input((8, 8, 3), batch_size=B, name="images")
    h = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu", bias_initializer=init,
                               name="conv")(inp)
    h = tf.keras.layers.MaxPooling2D(2)(h)
    out = tf.keras.layers.Dense(CLASSES, bias_initializer=init, name="dense")(
        tf.keras.layers.Flatten()(h))
    return tf.keras.Model(inp, out)


def main():
    model = build()
    keras_initial = {v.path: v.numpy().copy() for v in model.trainable_variables}
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((STEPS, B, 8, 8, 3)).astype(np.float32)
    ys = rng.integers(0, CLASSES, (STEPS, B)).astype(np.int64)

    proto, _ = tf2onnx.convert.from_keras(
        model, input_signature=(tf.TensorSpec((B, 8, 8, 3), tf.float32, name="images"),),
        opset=17)
    logits = proto.graph.output[0].name
    proto.graph.input.append(helper.make_tensor_value_info("labels", TensorProto.INT64, [B]))
    proto.graph.node.append(helper.make_node("SoftmaxCrossEntropyLoss", [logits, "labels"],
                                             ["loss"], reduction="mean"))
    proto.graph.output.append(helper.make_tensor_value_info("loss", TensorProto.FLOAT, []))
    initial = {t.name: numpy_helper.to_array(t).copy() for t in proto.graph.initializer}

    sess = tgx.TrainingSession(proto, "loss", tgx.SGD(lr=LR),
                               tgx.DataFlow(batches_per_step=STEPS, anchors=["loss"]))
    ours = sess.run({"images": xs, "labels": ys})["loss"].tolist()
    trained = sess.weights()

    opt = tf.keras.optimizers.SGD(learning_rate=LR)
    lossf = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras_losses = []
    for s in range(STEPS):
        with tf.GradientTape() as tape:
            loss = lossf(ys[s], model(xs[s], training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        keras_losses.append(float(loss))

    # Keras variables -> the ONNX initializers tf2onnx made of them (matched by their initial
    # values; the conv kernel is stored transposed, HWIO -> OIHW).
    def layouts(a):
        return [(lambda x: x, a)] + ([(lambda x: x.transpose(3, 2, 0, 1),
                                       a.transpose(3, 2, 0, 1))] if a.ndim == 4 else [])
    diffs = {}
    for var in model.trainable_variables:
        matched = [(name, f) for name, value in initial.items() if name in trained
                   for f, a in layouts(keras_initial[var.path]) if a.shape == value.shape
                   and np.array_equal(a, value)]
        if len(matched) != 1:
            diffs[var.path] = None  # not found in the ONNX model: the test fails on it
            continue
        name, f = matched[0]
        want = f(var.numpy())
        diffs[var.path] = float(np.abs(trained[name] - want).max() / np.abs(want).max())
    print(json.dumps({"ours": ours, "keras": keras_losses, "weights": diffs}))


if __name__ == "__main__":
    main()
    sys.exit(0)
