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
required <- c("admit", "gre", "gpa", "rank")

read_data <- function(src) {
  if (!grepl("^https?://", src) && !file.exists(src)) fail("cannot read ", src, ": no such file")
  d <- tryCatch(
    read.csv(src, colClasses = "character", strip.white = TRUE),
    error = function(e) fail("cannot read ", src, ": ", conditionMessage(e)),
    warning = function(w) fail("cannot read ", src, ": ", conditionMessage(w))
  )
  if (nrow(d) == 0L) fail(src, " has a header but no rows")
  missing <- setdiff(required, names(d))
  if (length(missing)) {
    fail(src, " lacks column(s) ", paste(missing, collapse = ", "),
         " (expected ", paste(required, collapse = ", "), ")")
  }
  for (col in c("admit", "gre", "gpa")) {
    x <- suppressWarnings(as.numeric(d[[col]]))
    bad <- which(is.na(x) | !is.finite(x))
    if (length(bad)) {
      fail(src, ": column ", col, " row ", bad[[1L]], " is ", sQuote(d[[col]][[bad[[1L]]]], FALSE),
           ", not a number")
    }
    d[[col]] <- x
  }
  if (!all(d$admit %in% c(0, 1))) fail(src, ": column admit must be 0 or 1")
  bad <- which(d$rank == "" | is.na(d$rank))
  if (length(bad)) fail(src, ": column rank row ", bad[[1L]], " is empty")
  d$rank <- factor(d$rank, levels = sort(unique(d$rank)))
  if (nlevels(d$rank) < 2L) fail(src, ": column rank needs at least two levels")
  d[required]
}

if (is.null(data_arg)) {
  source(file.path(here, "simulate.R"))
  data <- simulate_admission()
  data$rank <- factor(data$rank)
  src <- "simulated stand-in (models/simulate.R, seed 2017)"
} else {
  data <- read_data(data_arg)
  src <- data_arg
}

# Fitted at top level so the formula's environment is the global one, which
# saveRDS does not serialise (a function's frame, with the data, would be).
fit <- glm(admit ~ gre + gpa + rank, family = binomial, data = data)
if (!fit$converged) fail("the model did not converge on ", src)

tmp <- paste0(out, ".tmp-", Sys.getpid())
ok <- tryCatch({ saveRDS(fit, tmp); file.rename(tmp, out) }, error = function(e) FALSE)
if (!isTRUE(ok)) {
  unlink(tmp)
  fail("cannot write ", out)
}
message(sprintf("train.R: fitted on %d rows of %s; wrote %s", nrow(data), src, out))
