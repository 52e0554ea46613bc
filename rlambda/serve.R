# Helpers of the embedded R session, defined once at start-up in their own
# environment. They receive R objects built from values that Python has
# already validated; no request text is ever parsed or evaluated as R code.

# Read a model file. The caller has checked where the file came from (and,
# with a manifest, its sha256) before this runs: readRDS of an untrusted file
# can run code in R < 4.4.0 (CVE-2024-27322).
rl_read <- function(path) readRDS(path)

# What a model accepts and returns, derived from the object itself.
rl_describe <- function(fit) {
  tt <- tryCatch(terms(fit), error = function(e) NULL)
  if (is.null(tt)) stop("the model has no terms(): cannot tell which predictors it needs")
  tt <- delete.response(tt)
  vars <- all.vars(tt)
  dc <- attr(tt, "dataClasses")
  xl <- fit$xlevels
  types <- vapply(vars, function(v) {
    cl <- if (!is.null(dc) && v %in% names(dc)) dc[[v]] else "numeric"
    if (cl %in% c("factor", "ordered", "character")) "factor"
    else if (cl == "logical") "logical"
    else if (cl == "numeric") "numeric"
    else cl
  }, character(1), USE.NAMES = FALSE)
  levels <- lapply(vars, function(v) {
    if (!is.null(xl[[v]])) as.character(xl[[v]]) else character(0)
  })
  fam <- if (inherits(fit, "glm")) family(fit) else NULL
  binary <- !is.null(fam) && fam$family %in% c("binomial", "quasibinomial")
  list(
    class = class(fit)[1],
    kind = if (binary) "binary" else "regression",
    family = if (is.null(fam)) "" else fam$family,
    link = if (is.null(fam)) "" else fam$link,
    formula = paste(deparse(formula(fit), width.cutoff = 500L), collapse = " "),
    names = vars,
    types = types,
    levels = levels
  )
}

# A function of (columns, n) that returns the model's predictions on the
# response scale. Columns arrive as a plain list in the order rl_describe
# reports, factors as 1-based integer codes; the data frame is assembled here,
# which costs a few microseconds instead of data.frame()'s checks and copies.
# For plain lm/glm it does what predict.lm does, minus per-call checks that
# cannot fail on validated input: a third faster for one row, the same
# numbers. Anything else goes through the model's own predict method.
rl_scorer <- function(fit) {
  d <- rl_describe(fit)
  nm <- d$names
  fac <- which(d$types == "factor")
  lv <- d$levels
  predict_frame <- rl_predictor(fit)
  function(cols, n) {
    for (i in fac) {
      x <- cols[[i]]
      attr(x, "levels") <- lv[[i]]
      class(x) <- "factor"
      cols[[i]] <- x
    }
    names(cols) <- nm
    attr(cols, "row.names") <- c(NA_integer_, -n)
    class(cols) <- "data.frame"
    predict_frame(cols)
  }
}

rl_predictor <- function(fit) {
  plain <- class(fit)[1] %in% c("lm", "glm") &&
    is.null(fit$call$offset) && is.null(attr(terms(fit), "offset")) &&
    !is.matrix(coef(fit))
  if (!plain) {
    return(function(newdata) predict(fit, newdata = newdata, type = "response"))
  }
  tt <- delete.response(terms(fit))
  beta <- coef(fit)
  beta[is.na(beta)] <- 0  # aliased columns: predict.lm leaves them out
  xlev <- fit$xlevels
  contr <- fit$contrasts
  linkinv <- if (inherits(fit, "glm")) family(fit)$linkinv else identity
  function(newdata) {
    mf <- model.frame(tt, newdata, xlev = xlev)
    x <- model.matrix(tt, mf, contrasts.arg = contr)
    as.double(linkinv(drop(x %*% beta)))
  }
}

rl_version <- function() {
  paste(R.version$major, R.version$minor, sep = ".")
}
