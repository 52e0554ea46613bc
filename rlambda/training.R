# Training, evaluation and data checks for the admission model, shared by
# models/train.R (the command line) and the retrain handler (embedded R).
# Every problem stops with a one-line message that names it.

rl_required <- c("admit", "gre", "gpa", "rank")

# Read and check a training CSV. `levels`, when given, are the rank levels
# the served model knows: a file with another rank is refused, not fitted.
rl_training_data <- function(src, levels = character(0)) {
  if (!grepl("^https?://", src) && !file.exists(src)) stop("cannot read ", src, ": no such file", call. = FALSE)
  d <- tryCatch(
    read.csv(src, colClasses = "character", strip.white = TRUE),
    error = function(e) stop("cannot read ", src, ": ", conditionMessage(e), call. = FALSE),
    warning = function(w) stop("cannot read ", src, ": ", conditionMessage(w), call. = FALSE)
  )
  if (nrow(d) == 0L) stop(src, " has a header but no rows", call. = FALSE)
  missing <- setdiff(rl_required, names(d))
  if (length(missing)) {
    stop(src, " lacks column(s) ", paste(missing, collapse = ", "),
         " (expected ", paste(rl_required, collapse = ", "), ")", call. = FALSE)
  }
  for (col in c("admit", "gre", "gpa")) {
    x <- suppressWarnings(as.numeric(d[[col]]))
    bad <- which(is.na(x) | !is.finite(x))
    if (length(bad)) {
      stop(src, ": column ", col, " row ", bad[[1L]], " is ", sQuote(d[[col]][[bad[[1L]]]], FALSE),
           ", not a number", call. = FALSE)
    }
    d[[col]] <- x
  }
  if (!all(d$admit %in% c(0, 1))) stop(src, ": column admit must be 0 or 1", call. = FALSE)
  bad <- which(d$rank == "" | is.na(d$rank))
  if (length(bad)) stop(src, ": column rank row ", bad[[1L]], " is empty", call. = FALSE)
  if (length(levels)) {
    unknown <- setdiff(unique(d$rank), levels)
    if (length(unknown)) {
      stop(src, ": column rank has level(s) ", paste(unknown, collapse = ", "),
           " that the model does not know (expected ", paste(levels, collapse = ", "), ")", call. = FALSE)
    }
  } else {
    levels <- sort(unique(d$rank))
  }
  d$rank <- factor(d$rank, levels = levels)
  if (nlevels(droplevels(d$rank)) < 2L) stop(src, ": column rank needs at least two levels", call. = FALSE)
  if (length(unique(d$admit)) < 2L) stop(src, ": column admit has only one outcome", call. = FALSE)
  d[rl_required]
}

# The model. The formula's environment is the global one, which saveRDS does
# not serialise; a function's frame (holding the data) would be.
rl_fit_admission <- function(data) {
  f <- stats::as.formula("admit ~ gre + gpa + rank", env = globalenv())
  fit <- glm(f, family = binomial, data = data)
  if (!fit$converged) stop("the model did not converge", call. = FALSE)
  fit
}

# Log-loss, AUC (Mann-Whitney) and accuracy at 0.5 of probabilities p for outcomes y.
rl_metrics <- function(p, y) {
  pc <- pmin(pmax(p, 1e-15), 1 - 1e-15)
  n1 <- sum(y == 1)
  n0 <- sum(y == 0)
  auc <- if (n1 > 0 && n0 > 0) (sum(rank(p)[y == 1]) - n1 * (n1 + 1) / 2) / (n1 * n0) else NA_real_
  list(
    logloss = -mean(y * log(pc) + (1 - y) * log(1 - pc)),
    auc = auc,
    accuracy = mean((p > 0.5) == (y == 1)),
    rows = length(y)
  )
}

# Validate `src`, evaluate a fit on a seeded held-out split (and the current
# model, if given, on the same rows), then fit on all rows and save to `out`.
rl_retrain <- function(src, out, current = "", seed = 1L, holdout = 0.25) {
  cur <- if (nzchar(current)) readRDS(current) else NULL
  levels <- if (!is.null(cur) && !is.null(cur$xlevels$rank)) cur$xlevels$rank else character(0)
  d <- rl_training_data(src, levels)
  if (nrow(d) < 20L) stop(src, " has ", nrow(d), " rows; at least 20 are needed to fit and evaluate", call. = FALSE)
  set.seed(seed)
  test <- sort(sample.int(nrow(d), max(1L, round(nrow(d) * holdout))))
  fit_train <- suppressWarnings(rl_fit_admission(d[-test, , drop = FALSE]))
  held <- d[test, , drop = FALSE]
  p_new <- suppressWarnings(predict(fit_train, newdata = held, type = "response"))
  current_metrics <- if (is.null(cur)) NULL else rl_metrics(predict(cur, newdata = held, type = "response"), held$admit)
  fit <- rl_fit_admission(d)
  tmp <- paste0(out, ".tmp")
  saveRDS(fit, tmp)
  if (!file.rename(tmp, out)) stop("cannot write ", out, call. = FALSE)
  list(
    rows = nrow(d),
    train_rows = nrow(d) - length(test),
    holdout_rows = length(test),
    new = rl_metrics(p_new, held$admit),
    current = current_metrics,
    r_version = paste(R.version$major, R.version$minor, sep = ".")
  )
}
