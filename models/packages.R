#!/usr/bin/env Rscript
# Print the R packages a saved model needs at predict time, one per line:
# the packages of its classes, of the models and recipe it wraps, and their
# Depends and Imports, recursively, without the packages every R ships.
# The packaging script bundles exactly these into the Lambda zip:
#
#   bash scripts/package.sh --r-packages "$(Rscript models/packages.R model.rds | paste -sd, -)"
#
#   Rscript models/packages.R <model.rds>
# Exit status 1, with a one-line message, when the file cannot be read or a
# package the model needs is not installed here.

fail <- function(...) {
  message("packages.R: error: ", ...)
  quit(save = "no", status = 1L)
}

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1L || startsWith(args[[1L]], "-")) fail("usage: Rscript models/packages.R <model.rds>")
if (!file.exists(args[[1L]])) fail("cannot read ", args[[1L]], ": no such file")

f <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
here <- if (length(f)) dirname(normalizePath(f[[1L]])) else "models"
env <- new.env()
sys.source(file.path(here, "..", "rlambda", "serve.R"), envir = env)

pkgs <- tryCatch(
  env$rl_packages(env$rl_read(args[[1L]]), recursive = TRUE),
  error = function(e) fail(sub("^\\[rlambda\\] ", "", conditionMessage(e)))
)
if (length(pkgs)) writeLines(pkgs)
