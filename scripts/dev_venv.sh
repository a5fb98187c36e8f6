# Sourced by the README's two commands: make sure .venv holds requirements/dev.txt (created on
# first use, rebuilt when a requirements file changes). PYTHON picks the interpreter (python3).
want=$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.requirements.sha 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv from requirements/dev.txt (torch is large: a few minutes the first time)"
  # --clear: a package that changes hands between versions (SDK v2's sagemaker/serve/ went to
  # sagemaker-serve in v3) must not be half removed by an upgrade in place
  "${PYTHON:-python3}" -m venv --clear .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r requirements/dev.txt
  # The launch scripts' SDK v3 brings mlflow, which wants gunicorn < 27 (pip steps it down) for
  # its server's optional gunicorn mode; the tests run `mlflow server` on its default, uvicorn,
  # and the server tests must run the serving images' gunicorn: put back, with pip's warning.
  .venv/bin/pip install --quiet -r requirements/launch.txt
  .venv/bin/pip install --quiet --no-deps -r requirements/server.txt
  .venv/bin/pip install --quiet --no-deps -c requirements/constraints.txt -r requirements/smdebug.txt
  echo "$want" > .venv/.requirements.sha
fi
