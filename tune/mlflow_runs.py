"""tune.local's study in MLflow, when MLFLOW_TRACKING_URI is set: one run for the study, and
nested under it (MLflow's `mlflow.parentRunId` tag) a run for each trial, pruned and failed ones
included, in MLFLOW_EXPERIMENT_NAME (default: byoc-image-classifier).

A trial's training run records itself (train/tracking.py), told by its environment to be the
study's child; a --fast trial, which trains no job, is recorded here from Optuna's trial (its
parameters, and the objective by epoch). When a trial ends, its run gets the trial's state as
the tag `optuna_state`: a pruned trial's run ends KILLED, a failed one's FAILED with the reason.
The study's run keeps the best value and parameters so far; its id is kept in the study, so a
study continued later continues its run. As in training, the server failing costs one warning,
never the study.
"""
from __future__ import annotations

import logging
import time

import optuna

from train.tracking import encode_tags, experiment_id, mlflow_client, unreachable

log = logging.getLogger(__name__)
RUN_ATTR = "mlflow_run_id"
END_STATUS = {optuna.trial.TrialState.COMPLETE: "FINISHED",
              optuna.trial.TrialState.PRUNED: "KILLED",
              optuna.trial.TrialState.FAIL: "FAILED"}


class StudyRuns:
    def __init__(self, uri: str | None):
        self.uri = uri
        self.parent: str | None = None

    @property
    def enabled(self) -> bool:
        return self.uri is not None and self.parent is not None

    def _client(self):
        return mlflow_client(self.uri)

    def _try(self, what: str, action) -> None:
        try:
            action()
        except Exception as e:  # the study goes on without tracking
            log.warning("%s while %s: the study goes on without tracking",
                        unreachable(self.uri, e), what)
            self.uri = None

    def open(self, study: optuna.Study) -> "StudyRuns":
        """The study's run: continued when the study has one, else made."""
        if self.uri is None:
            return self

        def start():
            client = self._client()
            self.parent = study.user_attrs.get(RUN_ATTR)
            if self.parent:
                client.update_run(self.parent, status="RUNNING")
                return
            self.parent = client.create_run(experiment_id(client), run_name=study.study_name,
                                            tags={"optuna_study": study.study_name}).info.run_id
            study.set_user_attr(RUN_ATTR, self.parent)
            log.info("MLflow: the study's run %s at %s", self.parent, self.uri)

        self._try("opening the study's run", start)
        return self

    def trial_tags(self, study: optuna.Study, number: int) -> dict[str, str]:
        return {"mlflow.parentRunId": self.parent, "optuna_study": study.study_name,
                "optuna_trial": str(number)}

    def trial_environment(self, study: optuna.Study, number: int) -> dict[str, str]:
        """What a trial's training run reads to record itself as the study's child."""
        if not self.enabled:
            return {}
        tags = self.trial_tags(study, number)
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_RUN_NAME": f"trial-{number:04d}",
                "BYOC_MLFLOW_TAGS": encode_tags(tags)}

    def trial_ended(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    run_id: str | None) -> None:
        """run_id: the trial's training run (None for a fast trial, or one that never opened
        its run): its end, or a run made here for the trial."""
        if not self.enabled:
            return

        def record():
            from mlflow.entities import Metric, Param

            client = self._client()
            status = END_STATUS.get(trial.state, "KILLED")
            run = run_id
            if run is None:
                experiment_id = client.get_run(self.parent).info.experiment_id
                run = client.create_run(experiment_id, run_name=f"trial-{trial.number:04d}",
                                        tags=self.trial_tags(study, trial.number)).info.run_id
                now = int(time.time() * 1000)
                client.log_batch(run, params=[Param(k, str(v)) for k, v in trial.params.items()],
                                 metrics=[Metric("valid_best_acc", float(v), now, int(step))
                                          for step, v in trial.intermediate_values.items()])
            client.set_tag(run, "optuna_state", trial.state.name)
            if trial.user_attrs.get("failure"):
                client.set_tag(run, "failure", trial.user_attrs["failure"][:5000])
            if client.get_run(run).info.status in ("RUNNING", "SCHEDULED"):
                client.set_terminated(run, status)
            best = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if best:
                client.log_batch(self.parent, metrics=[Metric(
                    "best_valid_best_acc", float(study.best_value), int(time.time() * 1000),
                    trial.number)])
                client.set_tag(self.parent, "best_trial", str(study.best_trial.number))

        self._try(f"recording trial {trial.number}", record)

    def close(self) -> None:
        if self.enabled:
            self._try("closing the study's run",
                      lambda: self._client().set_terminated(self.parent, "FINISHED"))
