# What a served model can say about itself beyond its predictions: an
# example row (the inputs the page opens with), the observed range of each
# numeric predictor (what the page's what-if chart sweeps), and, for lm/glm,
# a confidence interval computed by R itself.
#
# Evaluated into the same environment as serve.R (rsession.py), after it;
# rl_load() calls rl_explain(fit, proto) once per model load. Only base R and
# `stats` are used, so it runs in an R started with only `stats` loaded.
#
# rl_explain returns
#   list(example  = named list: one value per predictor, or NULL where the
#                   object keeps no data for it,
#        ranges   = named list: c(min, max) per numeric/integer predictor
#                   with data, NULL otherwise,
#        interval = NULL, or function(cols, n, level) -> double vector of
#                   2n values (n lower bounds, then n upper bounds) on the
#                   response scale, cols as the scorer gets them)

# The data the object keeps, as data frames to look predictors up in:
# a bundle's declared example and data, a glm's $data, the model frame, and
# caret's trainingData.
rl_kept_frames <- function(fit) {
  out <- list()
  if (inherits(fit, "rlambda_bundle")) {
    if (is.data.frame(fit$example)) out <- c(out, list(fit$example))
    if (is.data.frame(fit$data)) out <- c(out, list(fit$data))
    fit <- fit$model
  }
  if (is.data.frame(fit$data)) out <- c(out, list(fit$data))
  if (is.data.frame(fit$model)) out <- c(out, list(fit$model))
  if (is.data.frame(fit$trainingData)) out <- c(out, list(fit$trainingData))
  out
}

# The column for predictor `v`: itself, or a model-frame column that is
# only a wrapper of it (factor(v), as.factor(v), ...).
rl_column_for <- function(frames, v) {
  for (f in frames) if (v %in% names(f)) return(f[[v]])
  for (f in frames) {
    for (nm in names(f)) {
      e <- tryCatch(str2lang(nm), error = function(e) NULL)
      if (is.call(e) && identical(all.vars(e), v) && length(e) == 2L &&
          as.character(e[[1L]]) %in% c("factor", "as.factor", "ordered", "as.ordered", "as.character")) {
        return(f[[nm]])
      }
    }
  }
  NULL
}

# The most frequent value (first in level order on ties).
rl_mode <- function(x, levels) {
  x <- as.character(x)
  x <- x[!is.na(x)]
  if (!length(x)) return(NULL)
  counts <- table(factor(x, levels = if (length(levels)) levels else sort(unique(x))))
  counts <- counts[counts > 0L]
  if (!length(counts)) return(NULL)
  names(counts)[which.max(counts)]
}

rl_example_of <- function(fit, proto) {
  frames <- rl_kept_frames(fit)
  example <- list()
  ranges <- list()
  for (i in seq_along(proto$names)) {
    v <- proto$names[[i]]
    type <- proto$types[[i]]
    col <- rl_column_for(frames, v)
    value <- NULL
    range <- NULL
    if (!is.null(col)) {
      if (type %in% c("numeric", "integer") && is.numeric(col) && any(is.finite(col))) {
        x <- col[is.finite(col)]
        value <- stats::median(x)
        if (type == "integer") value <- round(value)
        value <- as.double(value)
        range <- as.double(range(x))
      } else if (type %in% c("factor", "character")) {
        value <- rl_mode(col, proto$levels[[i]])
        if (!is.null(value) && length(proto$levels[[i]]) && !(value %in% proto$levels[[i]])) value <- NULL
      } else if (type == "logical" && is.logical(col) && any(!is.na(col))) {
        value <- sum(col, na.rm = TRUE) * 2L > sum(!is.na(col))
      }
    }
    example[v] <- list(value)
    ranges[v] <- list(range)
  }
  list(example = example, ranges = ranges)
}

# A data frame from the scorer's columns (factors as 1-based codes).
rl_frame_builder <- function(proto) {
  nm <- proto$names
  fac <- which(proto$types == "factor")
  lv <- proto$levels
  ordered <- proto$ordered
  function(cols, n) {
    for (i in fac) {
      cols[[i]] <- structure(cols[[i]], levels = lv[[i]],
                             class = if (isTRUE(ordered[[i]])) c("ordered", "factor") else "factor")
    }
    names(cols) <- nm
    attr(cols, "row.names") <- c(NA_integer_, -n)
    class(cols) <- "data.frame"
    cols
  }
}

# lm: predict(..., interval = "confidence"), R's own. glm:
# predict(..., type = "link", se.fit = TRUE), fit -/+ z * se on the link
# scale, mapped to the response scale by the link inverse (bounds sorted, as
# an inverse link may decrease). Other models: NULL (no interval).
rl_interval_of <- function(fit, proto) {
  cls <- class(fit)[[1L]]
  if (!(cls %in% c("lm", "glm")) || is.matrix(stats::coef(fit))) return(NULL)
  frame <- rl_frame_builder(proto)
  if (cls == "lm") {
    return(function(cols, n, level) {
      p <- stats::predict(fit, newdata = frame(cols, n), interval = "confidence", level = level)
      as.double(c(p[, "lwr"], p[, "upr"]))
    })
  }
  linkinv <- stats::family(fit)$linkinv
  function(cols, n, level) {
    p <- stats::predict(fit, newdata = frame(cols, n), type = "link", se.fit = TRUE)
    z <- stats::qnorm((1 + level) / 2)
    a <- linkinv(p$fit - z * p$se.fit)
    b <- linkinv(p$fit + z * p$se.fit)
    as.double(c(pmin(a, b), pmax(a, b)))
  }
}

rl_explain <- function(fit, proto) {
  ex <- tryCatch(rl_example_of(fit, proto), error = function(e) list(example = list(), ranges = list()))
  inner <- if (inherits(fit, "rlambda_bundle")) NULL else fit  # a recipe changes the frame
  interval <- if (is.null(inner)) NULL else rl_interval_of(inner, proto)
  c(ex, list(interval = interval))
}
