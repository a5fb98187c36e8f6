"""The inference server, on SageMaker's serving contract (port 8080, GET /ping, POST /invocations).

    settings.py    every knob, from environment variables (SAGEMAKER_* and BYOC_*)
    predictor.py   model folder -> backend (ONNX Runtime or PyTorch) -> top-k predictions
    app.py         the Flask routes: content types, headers, JSON answers and errors
    server.py      `serve`: checks the model folder, runs gunicorn (workers, threads, signals)

It reads only the model folder (see artifact/); it never imports train/.
"""
