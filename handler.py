"""AWS Lambda entry points: thin wiring around the ``rlambda`` package.

``lambda_handler`` answers API Gateway (REST and HTTP APIs), function URLs
and direct invocations (``aws lambda invoke``) with the model named by
``MODEL_URI``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# In the deployment zip, the trimmed R lives at the task root; point rpy2 at
# it before it looks for R on its own.
_ROOT = os.path.dirname(os.path.abspath(__file__))
if "R_HOME" not in os.environ and os.path.exists(os.path.join(_ROOT, "R", "lib", "libR.so")):
    os.environ["R_HOME"] = os.path.join(_ROOT, "R")

from rlambda import logs, rsession  # noqa: E402
from rlambda.app import App  # noqa: E402

logs.configure()
app = App()

# Start R during Lambda's init phase (outside the billed, latency-visible
# first request). A failure here is reported by the first request instead.
try:
    rsession.start()
except Exception as exc:  # pragma: no cover - reported by requests as 503
    print(f"rlambda: R did not start at init: {exc}", file=sys.stderr)


def lambda_handler(event: Any, context: Any) -> Any:
    """Score the model for any supported event shape."""
    return app.handle(event, context)


def pred_admit(gre: Any, gpa: Any, rank: Any) -> bool:
    """The original post's helper: True if the applicant is predicted to be admitted."""
    return bool(app.score({"gre": gre, "gpa": gpa, "rank": rank})["result"])
