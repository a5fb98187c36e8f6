"""A new user's set-up, met by each launch script's entry point (`python -m scripts.X` runs
common.entry_point(main)): a bad S3 URI, no credentials or no region, keys AWS refuses, an IAM
Identity Center login never made or expired, a data bucket that is not there. Each ends in one
line that says what to do, no traceback. What can be found out before a request (a bad URI, no
credentials, no region) is, and nothing reaches AWS; what only a request reveals goes through
botocore's own client, to a local server that answers as AWS does. Run in this process, each
script's main() as its entry point runs it: SDK v3's import is paid once."""
from __future__ import annotations

import hashlib
import http.server
import importlib
import json
import os
import threading

import pytest

from scripts import common

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture(scope="module")
def aws_stand_in():
    """An HTTP server standing in for every AWS endpoint: it records the requests it gets, and
    answers each with answer(command, path, headers) -> (status, headers, body) (500 at first)."""
    state = {"asked": [], "answer": lambda command, path, headers: (500, {}, b"")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            state["asked"].append(f"{self.command} {self.path}")
            status, headers, body = state["answer"](self.command, self.path, self.headers)
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_any

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()


def refusal(code: str, status: int = 403, message: str = "refused"):
    """An answer as AWS refuses a request, in each protocol's error shape: JSON for the JSON
    protocols (SageMaker, ECR, SSO), XML for the query and REST-XML ones (STS, S3)."""
    def answer(command, path, headers):
        if "json" in headers.get("Content-Type", "") or path.startswith("/federation/"):
            body = json.dumps({"__type": code, "message": message}).encode()
            return status, {"Content-Type": "application/x-amz-json-1.1",
                            "x-amzn-ErrorType": code}, body
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>"
                f"{message}</Message><BucketName>data</BucketName></Error>"
                "<RequestId>1</RequestId></ErrorResponse>").encode()
        return status, {"Content-Type": "text/xml"}, body
    return answer


def commands(data, image) -> dict[str, tuple[list[str], list[str] | None]]:
    """Each launch script: a command line that would call AWS, and the same with a bad S3 URI
    (None: the script takes no S3 location)."""
    def pair(good: list[str], flag: str, bad: str) -> tuple[list[str], list[str]]:
        if flag not in good:  # a positional: replace the s3:// argument
            return good, [bad if a.startswith("s3://") else a for a in good]
        at = good.index(flag) + 1
        return good, [*good[:at], bad, *good[at + 1:]]

    return {
        "upload_data": pair([str(data), "s3://bucket/dogs"], "", "bucket/dogs"),
        "sagemaker_train": pair(["--data", "s3://bucket/dogs", "--output", "s3://bucket/runs",
                                 "--role", ROLE, "--no-wait"], "--data", "bucket/dogs"),
        "sagemaker_tune": pair(["--data", "s3://bucket/dogs", "--output", "s3://bucket/tuning",
                                "--role", ROLE, "--no-wait"], "--output", "s3://"),
        "sagemaker_deploy": pair(["--model-data", "s3://bucket/runs/model.tar.gz", "--role", ROLE],
                                 "--model-data", "bucket/runs/model.tar.gz"),
        "sagemaker_invoke": pair(["--endpoint-name", "dogs", "--async-input", "s3://bucket/in",
                                  str(image)], "--async-input", "bucket/in"),
        "sagemaker_batch_transform": pair(
            ["--model-data", "s3://bucket/runs/model.tar.gz", "--images", "s3://bucket/images",
             "--output", "s3://bucket/out", "--role", ROLE], "--output", "bucket/out"),
        "sagemaker_cleanup": (["--endpoint-name", "dogs"], None),
        "sagemaker_registry": pair(["--role", ROLE, "register", "--group", "dogs",
                                    "--model-data", "s3://bucket/runs/model.tar.gz"],
                                   "--model-data", "s3:/bucket/runs/model.tar.gz"),
        "sagemaker_pipeline": pair(["--role", ROLE, "upsert", "--data", "s3://bucket/dogs",
                                    "--output", "s3://bucket/pipeline"], "--data", "bucket/dogs"),
        "sagemaker_monitor": pair(["--role", ROLE, "create", "--endpoint-name", "dogs",
                                   "--output", "s3://bucket/monitoring"], "--output",
                                  "bucket/monitoring"),
    }


SCRIPTS = list(commands("data", "image"))
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}
REGION = {"AWS_DEFAULT_REGION": "eu-west-1"}


@pytest.fixture
def launch(aws_stand_in, small_data_master, tmp_path, monkeypatch):
    """launch(script, environment, bad_uri=False) -> the one line its entry point ended with,
    run here as `python -m scripts.<script>` runs it, in an environment of nothing but the
    given variables (no AWS configuration of this machine's), every endpoint the stand-in."""
    url, state = aws_stand_in
    image = next((small_data_master / "test").rglob("*.png"))
    lines = commands(small_data_master, image)

    def run(script: str, variables: dict[str, str], bad_uri: bool = False) -> str:
        for key in list(os.environ):
            if key.startswith(("AWS_", "SAGEMAKER_")):
                monkeypatch.delenv(key)
        for key, value in {"HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"),
                           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                           "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": url,
                           **variables}.items():
            monkeypatch.setenv(key, value)
        good, bad = lines[script]
        main = importlib.import_module(f"scripts.{script}").main
        state["asked"].clear()
        with pytest.raises(SystemExit) as ended:
            common.entry_point(lambda: main(bad if bad_uri else good))
        said = str(ended.value)
        assert "\n" not in said and "Traceback" not in said, said
        return said

    return run


CASES = {  # (environment, whether the command has a bad S3 URI, what the line says)
    "bad S3 URI": ({**CREDENTIALS, **REGION}, True, "is not an S3 location: write s3://"),
    "no credentials": (REGION, False, "no AWS credentials: run `aws configure`"),
    "no region": (CREDENTIALS, False, "no AWS region: pass --region"),
}
RUNS = [(script, case) for script, (_, bad) in commands("data", "image").items()
        for case, (_, with_bad_uri, _) in CASES.items() if bad is not None or not with_bad_uri]


@pytest.mark.parametrize("script, case", RUNS)
def test_a_new_users_mistakes_are_one_line_and_nothing_reaches_aws(script, case, launch,
                                                                  aws_stand_in):
    variables, with_bad_uri, says = CASES[case]
    assert says in launch(script, variables, with_bad_uri)
    assert aws_stand_in[1]["asked"] == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_keys_aws_refuses_are_one_line_in_every_script(script, launch, aws_stand_in):
    """The first request each script sends, refused as AWS refuses expired keys."""
    aws_stand_in[1]["answer"] = refusal("ExpiredToken")
    said = launch(script, {**CREDENTIALS, **REGION})
    assert said == common.REFUSED_CREDENTIALS.format(code="ExpiredToken")
    assert aws_stand_in[1]["asked"]  # a request went out, and was refused


@pytest.mark.parametrize("code", sorted(common.CREDENTIAL_ERROR_CODES))
def test_every_refusal_of_the_keys_is_one_line(code, launch, aws_stand_in):
    aws_stand_in[1]["answer"] = refusal(code)
    assert launch("sagemaker_deploy", {**CREDENTIALS, **REGION}) == \
        common.REFUSED_CREDENTIALS.format(code=code)


def sso_profile(folder, token_expires: str | None) -> dict[str, str]:
    """An AWS config of one IAM Identity Center profile, `dev` (the sso_session style that
    `aws configure sso` writes), and the login's cached token when token_expires is given."""
    config = folder / "config"
    config.write_text("[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\n"
                      "sso_role_name = Admin\nregion = eu-west-1\n\n[sso-session corp]\n"
                      "sso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n"
                      "sso_registration_scopes = sso:account:access\n")
    if token_expires:
        cache = folder / ".aws" / "sso" / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        (cache / f"{hashlib.sha1(b'corp').hexdigest()}.json").write_text(json.dumps({
            "startUrl": "https://corp.awsapps.com/start", "region": "eu-west-1",
            "accessToken": "token", "expiresAt": token_expires}))
    return {"AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "dev"}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("login", ["never made", "revoked"])
def test_an_sso_login_never_made_or_revoked_is_one_line_in_every_script(
        script, login, launch, aws_stand_in, tmp_path, monkeypatch):
    """No cached token (botocore's SSOTokenLoadError, before any request), or a token IAM
    Identity Center no longer honours (its GetRoleCredentials answers 401: botocore's
    UnauthorizedSSOTokenError)."""
    import botocore.credentials
    import botocore.tokens

    aws_stand_in[1]["answer"] = refusal("UnauthorizedException", 401, "Session token not found")
    variables = sso_profile(tmp_path, None if login == "never made" else "2099-01-01T00:00:00Z")
    # botocore finds the login's cache under the HOME it had when imported: here, this test's
    for provider in (botocore.credentials.SSOProvider, botocore.tokens.SSOTokenProvider):
        monkeypatch.setattr(provider, "_SSO_TOKEN_CACHE_DIR", str(tmp_path / ".aws/sso/cache"))
    said = launch(script, variables)
    assert said == ("your IAM Identity Center (SSO) login for profile dev is missing or has "
                    "expired: run `aws sso login --profile dev`, then try again")
    asked = aws_stand_in[1]["asked"]
    assert (asked == []) if login == "never made" else (asked[0].startswith(
        "GET /federation/credentials"))


@pytest.mark.parametrize("code, says", [
    ("NoSuchBucket", "s3://bucket/dogs: there is no bucket bucket (NoSuchBucket): check its "
                     "name in the s3:// URI (`aws s3 ls` lists your buckets)"),
    ("AccessDenied", "s3://bucket/dogs: S3 refused ListObjectsV2 on bucket bucket "
                     "(AccessDenied): the credentials you launch with need s3:ListBucket on it, "
                     "and a bucket of another account must allow them in its bucket policy")])
@pytest.mark.parametrize("script", ["upload_data", "sagemaker_train"])
def test_a_data_bucket_not_there_or_not_yours_is_one_line(script, code, says, launch,
                                                          aws_stand_in, monkeypatch):
    """The data's bucket, listed before the job is asked for (the training job's image is read
    from ECR first: here it is there; SDK v3's check of the role is not under test)."""
    from scripts import platforms

    monkeypatch.setattr(platforms, "ecr_manifest", lambda uri, ecr: ({}, "", ""))
    identity = ("<GetCallerIdentityResponse><GetCallerIdentityResult><Account>123456789012"
                "</Account></GetCallerIdentityResult></GetCallerIdentityResponse>").encode()
    refuse = refusal(code, 404 if code == "NoSuchBucket" else 403)
    aws_stand_in[1]["answer"] = lambda command, path, headers: (
        (200, {"Content-Type": "text/xml"}, identity) if command == "POST" and path == "/"
        else refuse(command, path, headers))
    assert launch(script, {**CREDENTIALS, **REGION, "SAGEMAKER_VALIDATE_ROLE": "false"}) == says
