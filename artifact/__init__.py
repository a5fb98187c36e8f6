"""The model artifact: the only contract between train/ and serve/.

A trained model is one self-describing folder (what SageMaker tars into model.tar.gz and unpacks
into /opt/ml/model for serving):

    manifest.json       architecture, head, class names in index order, preprocessing,
                        metrics, library versions          (artifact.manifest)
    model.safetensors   the network's state_dict, no pickle (artifact.network rebuilds it)
    model.onnx          the same network for ONNX Runtime, input "images" NCHW float32
    model.int8.onnx     its int8 copy for CPU endpoints, with its gate's figures in the
                        manifest (train/quantize.py)
    baseline.json       what the validation images look like to the model, for the drift
                        monitor (artifact/baseline.py)

Preprocessing (decode, resize, crop, normalise) lives in artifact.preprocess so that training's
evaluation and serving's inference compute exactly the same input tensor.
The file names live in artifact.manifest. This package needs numpy and Pillow only;
artifact.network also needs torch and torchvision.
"""
