#!/usr/bin/env Rscript
# Fit the graduate-admission model and save it as an .rds.
#
#   Rscript models/train.R [--data <csv path or http(s) URL>] [--out <path.rds>]
#
# --data defaults to the seeded simulated stand-in (simulate.R); pass the real
# UCLA binary.csv to train on it. --out defaults to models/admission.rds.
# A bad CSV stops with a one-line message and a non-zero exit, and no output
# file is written (the model is saved to a temporary name, then renamed).

fail <- function(...) {
  message("train.R: error: ", ...)
  quit(save = "no", status = 1L)
}

script_dir <- function() {
  f <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
  if (length(f)) dirname(normalizePath(f[[1L]])) else "models"
}

args <- commandArgs(trailingOnly = TRUE)
opt <- function(name, default) {
  i <- match(name, args)
  if (is.na(i)) return(default)
  if (i == length(args)) fail(name, " needs a value")
  args[[i + 1L]]
}
unknown <- setdiff(grep("^--", args, value = TRUE), c("--data", "--out"))
if (length(unknown)) fail("unknown option ", unknown[[1L]], " (expected --data and --out)")

here <- script_dir()
data_arg <- opt("--data", NULL)
out <- opt("--out", file.path(here, "admission.rds"))
# The checks and the fit are the retrain handler's own (rlambda/training.R).
source(file.path(dirname(here), "rlambda", "training.R"))

if (is.null(data_arg)) {
  source(file.path(here, "simulate.R"))
  data <- simulate_admission()
  data$rank <- factor(data$rank)
  src <- "simulated stand-in (models/simulate.R, seed 2017)"
} else {
  data <- tryCatch(rl_training_data(data_arg), error = function(e) fail(conditionMessage(e)))
  src <- data_arg
}
fit <- tryCatch(rl_fit_admission(data), error = function(e) fail(conditionMessage(e), " on ", src))

tmp <- paste0(out, ".tmp-", Sys.getpid())
ok <- tryCatch({ saveRDS(fit, tmp); file.rename(tmp, out) }, error = function(e) FALSE)
if (!isTRUE(ok)) {
  unlink(tmp)
  fail("cannot write ", out)
}
message(sprintf("train.R: fitted on %d rows of %s; wrote %s", nrow(data), src, out))
