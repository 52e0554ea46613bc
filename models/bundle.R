# Save a model together with its preprocessing and its input prototype, for
# rlambda to serve (vetiver-style: the prototype is taken from the training
# data, so the service knows each predictor's type and factor levels).
#
#   source("models/bundle.R")
#   rec <- recipes::prep(recipes::recipe(mpg ~ ., data = train) |>
#                          recipes::step_normalize(recipes::all_numeric_predictors()),
#                        training = train)
#   fit <- lm(mpg ~ ., data = recipes::bake(rec, new_data = NULL))
#   rlambda_save(rlambda_bundle(fit, data = train, recipe = rec), "model.rds")
#
# At predict time the service runs predict(model, bake(recipe, new_rows)).
# A bundle without a recipe is how to give a ranger or randomForest x/y model
# (which record no factor levels or types) an exact prototype.
#
# A model whose class rlambda does not know (its table is in rlambda/serve.R;
# docs/MODELS.md lists it) is served through a bundle that declares how to
# score it and what comes out:
#
#   fit <- ppr(mpg ~ wt + hp, data = mtcars, nterms = 1)
#   rlambda_save(rlambda_bundle(fit, data = mtcars,
#                               predict = function(model, newdata) predict(model, newdata),
#                               kind = "regression"), "model.rds")
#
# kind "regression": predict returns one number per row; "binary" or
# "multiclass": a matrix of class probabilities with one column per class
# (binary may return P(second class) alone), and `classes` names them;
# "label": the class of each row (factor or character), `classes` listing all.

#' Bundle a fitted model with its (prepped) recipe and input prototype.
#'
#' @param model the fitted model (lm, glm, randomForest, ranger, caret train, ...)
#' @param data the training data as the client will send it (raw, before the recipe);
#'   only its column types and factor levels are kept (a zero-row data frame).
#' @param recipe a prepped recipes::recipe, or NULL
#' @param outcome names of outcome columns to leave out of the prototype; by
#'   default the recipe's outcome role, or the model formula's response.
#' @param predict NULL (the model's class is in rlambda's table), or
#'   function(model, newdata) giving the model's answers for the rows
#' @param kind with `predict`: "regression", "binary", "multiclass" or "label"
#' @param classes with `predict` and a classifier kind: the class names, in
#'   the order of predict's probability columns
#' @param example a data frame of example rows the service opens its page
#'   with; by default three rows summarising `data`: the minimum, the median
#'   and the maximum of each numeric predictor (the most frequent level of
#'   each factor), so the service knows a typical row and each range.
#' @return a list of class "rlambda_bundle"
rlambda_bundle <- function(model, data, recipe = NULL, outcome = NULL,
                           predict = NULL, kind = NULL, classes = NULL, example = NULL) {
  stopifnot(is.data.frame(data))
  if (!is.null(predict)) {
    if (!is.function(predict)) stop("predict must be a function(model, newdata)")
    if (length(kind) != 1L || !kind %in% c("regression", "binary", "multiclass", "label")) {
      stop("with predict, give kind = \"regression\", \"binary\", \"multiclass\" or \"label\"")
    }
    if (kind != "regression" && length(classes) < 2L) stop("a ", kind, " bundle needs classes = c(...)")
  }
  if (!is.null(recipe)) {
    if (!inherits(recipe, "recipe")) stop("recipe must be a recipes::recipe")
    trained <- vapply(recipe$steps, function(s) isTRUE(s$trained), logical(1))
    if (!all(trained)) stop("prep() the recipe on the training data before bundling it")
  }
  predictors <- rlambda_predictors(model, data, recipe, outcome)
  missing <- setdiff(predictors, names(data))
  if (length(missing)) stop("data lacks predictor column(s) ", paste(missing, collapse = ", "))
  ptype <- as.data.frame(data[0L, predictors, drop = FALSE])
  # Character predictors: the values seen in training, so the service can
  # validate them (the recipe's step_dummy would turn an unseen one into NA).
  levels <- list()
  for (v in predictors) {
    if (is.character(data[[v]])) levels[[v]] <- sort(unique(data[[v]][!is.na(data[[v]])]))
  }
  bundle <- structure(
    list(model = model, recipe = recipe, ptype = ptype, levels = levels, packages = character(0),
         predict = predict, kind = kind, classes = if (is.null(classes)) NULL else as.character(classes),
         example = if (is.null(example)) rlambda_example(data[predictors]) else as.data.frame(example)),
    class = "rlambda_bundle"
  )
  # The packages are recorded now, where they are installed, so a service
  # that lacks one can still name it.
  bundle$packages <- rlambda_bundle_packages(bundle)
  bundle
}

# Three rows: min, median and max of each numeric column; the most frequent
# value of any other column in all three.
rlambda_example <- function(data) {
  cols <- lapply(data, function(x) {
    if (is.numeric(x) && any(is.finite(x))) {
      v <- c(min(x[is.finite(x)]), stats::median(x[is.finite(x)]), max(x[is.finite(x)]))
      if (is.integer(x)) as.integer(round(v)) else v
    } else {
      tab <- table(x)
      top <- names(tab)[which.max(tab)]
      if (is.factor(x)) factor(rep(top, 3L), levels = levels(x))
      else if (is.logical(x)) rep(as.logical(top), 3L) else rep(top, 3L)
    }
  })
  as.data.frame(cols, stringsAsFactors = FALSE, optional = TRUE)
}

rlambda_predictors <- function(model, data, recipe, outcome) {
  if (!is.null(recipe)) {
    info <- recipe$var_info
    return(info$variable[info$role %in% "predictor"])
  }
  tt <- if (inherits(model, "ranger")) NULL else tryCatch(terms(model), error = function(e) NULL)
  if (is.null(outcome) && !is.null(tt)) return(all.vars(delete.response(tt)))
  if (inherits(model, "ranger")) return(model$forest$independent.variable.names)
  setdiff(names(data), outcome)
}

# rlambda/serve.R beside this file's folder, found while this file is being
# source()d (source() keeps the file name in its frame as `ofile`).
rlambda_serve_R <- local({
  here <- NULL
  for (i in rev(seq_len(sys.nframe()))) {
    f <- sys.frame(i)$ofile
    if (!is.null(f)) { here <- dirname(normalizePath(f)); break }
  }
  if (is.null(here)) here <- "models"
  normalizePath(file.path(here, "..", "rlambda", "serve.R"), mustWork = FALSE)
})

rlambda_bundle_packages <- function(bundle) {
  if (!file.exists(rlambda_serve_R)) {
    warning("cannot find rlambda/serve.R; the bundle records no package names")
    return(character(0))
  }
  env <- new.env()
  sys.source(rlambda_serve_R, envir = env)
  env$rl_packages(bundle)
}

#' Save a bundle (or any model) for rlambda: saveRDS to a temporary name, then rename.
rlambda_save <- function(object, path) {
  tmp <- paste0(path, ".tmp")
  saveRDS(object, tmp)
  if (!file.rename(tmp, path)) stop("cannot write ", path)
  invisible(path)
}
