"""The original post's check, kept a plain unittest: ``python test_handler.py``.

In the repository, S3 is served by moto (the model is uploaded to the
original bucket, serverless-poc-models). Inside the deployment zip, where
moto is absent, the model comes from ``MODEL_URI`` as the function would
take it.
"""

import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    from moto import mock_aws
except ImportError:  # inside the Lambda package
    mock_aws = None


class AdmitHandlerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mock = None
        if mock_aws is not None:
            import boto3

            for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                                ("AWS_DEFAULT_REGION", "us-east-1")):
                os.environ.setdefault(name, value)
            os.environ.pop("AWS_ENDPOINT_URL", None)
            # moto patches botocore only: the cold start's standard-library S3 reader stands aside
            os.environ["S3_READER"] = "off"
            cls.mock = mock_aws()
            cls.mock.start()
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket="serverless-poc-models")
            s3.upload_file(os.path.join(HERE, "models", "admission.rds"), "serverless-poc-models", "admission.rds")
            os.environ["MODEL_URI"] = "s3://serverless-poc-models/admission.rds"
            os.environ["MODEL_CACHE_DIR"] = tempfile.mkdtemp(prefix="test-handler-")
        elif not os.environ.get("MODEL_URI"):
            raise unittest.SkipTest("set MODEL_URI: moto is not installed to serve S3")
        import handler

        cls.handler = handler

    @classmethod
    def tearDownClass(cls):
        if cls.mock is not None:
            cls.mock.stop()

    def test_admit(self):
        gre = "800"
        gpa = "4"
        ranks = {"1": True, "4": False}
        for rnk, expected in ranks.items():
            self.assertEqual(self.handler.pred_admit(gre, gpa, rnk), expected)

    def test_lambda_handler_direct_payload(self):
        out = self.handler.lambda_handler({"gre": 800, "gpa": 4, "rank": 1}, None)
        self.assertIs(out["result"], True)
        self.assertGreater(out["probability"], 0.5)
        self.assertEqual(len(out["model"]["sha256"]), 64)

    def test_bad_payload_raises_json_error(self):
        with self.assertRaises(Exception) as caught:
            self.handler.lambda_handler({"gre": 800, "gpa": 4, "rank": 9}, None)
        err = json.loads(str(caught.exception))
        self.assertEqual(err["httpStatus"], 400)
        self.assertEqual(err["errors"][0]["field"], "rank")


if __name__ == "__main__":
    unittest.main()
