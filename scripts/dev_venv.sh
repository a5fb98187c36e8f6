# Sourced by the README's two commands: make sure .venv holds requirements/dev.txt (created on
# first use, rebuilt when a requirements file changes). PYTHON picks the interpreter (python3).
want=$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.requirements.sha 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv from requirements/dev.txt (torch is large: a few minutes the first time)"
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r requirements/dev.txt
  .venv/bin/pip install --quiet --no-deps -c requirements/constraints.txt -r requirements/smdebug.txt
  echo "$want" > .venv/.requirements.sha
fi
