# syntax=docker/dockerfile:1
# The container-image package type: the same handler, R from Amazon Linux
# 2023's own packages, no GLIBC mismatch and a 10 GB limit instead of the
# zip's 250 MB. When to choose it over build/admission.zip: docs/DEPLOY.md.
#
#   docker build -t rlambda .
#   # local run through the Runtime Interface Emulator the base image ships:
#   docker run --rm -p 9000:8080 --entrypoint /usr/local/bin/aws-lambda-rie \
#     -e MODEL_URI=/var/task/models/admission.rds -v "$PWD/models:/var/task/models:ro" \
#     rlambda /var/lang/bin/python3 -m awslambdaric handler.lambda_handler
#   curl -s localhost:9000/2015-03-31/functions/function/invocations -d @tests/events/direct_single.json
#
# Not built by the tests (no docker engine there); the package names below
# are checked against AL2023's package list, not by a build.

ARG BASE=public.ecr.aws/lambda/python:3.12

# ---------------------------------------------------------------- build stage
FROM ${BASE} AS build
# The Lambda AL2023 base images ship microdnf as `dnf`. R-core is Amazon Linux
# 2023's own R (the package list has R-core and R-core-devel; `dnf install
# R-core` works since AL2022's 2022.0.20211222 release). The compilers and
# headers are here only to build rpy2's API-mode extension (faster than ABI
# mode) and, if no wheel fits, awslambdaric; none of it reaches the image.
RUN dnf install -y R-core R-core-devel gcc gcc-c++ make cmake autoconf automake libtool \
 && dnf clean all
# rpy2 pinned as in requirements.txt (3.6.x fails against R 4.2's libR);
# AL2023's R is 4.1.x or later. boto3 comes with the base image's runtime.
ARG RPY2_VERSION=3.5.17
ENV R_HOME=/usr/lib64/R
RUN pip install --no-cache-dir --target /opt/python "rpy2==${RPY2_VERSION}" awslambdaric
# Batch scoring needs data.table (rlambda/batch.R refuses to run without it).
# AL2023 has no R-data.table package: build it from CRAN's source (C only;
# zlib for fwrite's compression, OpenMP from gcc).
RUN dnf install -y zlib-devel && dnf clean all \
 && mkdir -p /opt/rlib \
 && Rscript -e 'install.packages("data.table", lib = "/opt/rlib", repos = "https://cloud.r-project.org")' \
 && Rscript -e 'library(data.table, lib.loc = "/opt/rlib")'

# ---------------------------------------------------------------- image
FROM ${BASE}
# R at run time only (no -devel, no compilers). Models that need CRAN
# packages beyond base R's (randomForest, ranger...): install them here with
# Rscript -e 'install.packages(...)' (needs R-core-devel and gcc in this stage).
RUN dnf install -y R-core libgomp zlib && dnf clean all
# rsession.py would find /usr/lib64/R itself; saying so spares the search.
ENV R_HOME=/usr/lib64/R
COPY --from=build /opt/rlib /opt/rlib
ENV R_LIBS_SITE=/opt/rlib
COPY --from=build /opt/python ${LAMBDA_TASK_ROOT}
COPY handler.py ${LAMBDA_TASK_ROOT}/
COPY rlambda/ ${LAMBDA_TASK_ROOT}/rlambda/
WORKDIR ${LAMBDA_TASK_ROOT}
# awslambdaric is the runtime interface client: it talks to the Lambda
# Runtime API and calls the handler named by CMD. The same image serves the
# three functions; the template picks the entry point with ImageConfig.Command
# (handler.retrain_handler, handler.batch_handler).
ENTRYPOINT ["/var/lang/bin/python3", "-m", "awslambdaric"]
CMD ["handler.lambda_handler"]
