# Helpers of the embedded R session, defined once at start-up in their own
# environment. They receive R objects built from values that Python has
# already validated; no request text is ever parsed or evaluated as R code.
#
# The contract with rsession.py: rl_load(path) returns
#   list(description = <plain list of character/logical vectors>,
#        scorer      = function(cols, n) -> double vector)
# where the scorer returns n values for "binary" (P(second class)) and
# "regression" models, and n * (K + 1) values (column-major n x (K+1) matrix:
# K class probabilities, then the 1-based index of the predicted class) for
# "multiclass" models.
#
# Refusals meant for the person deploying the model are raised with
# rl_refuse(), whose message starts with "[rlambda] " so that Python can tell
# them from R's own errors and show them verbatim.

rl_refuse <- function(...) stop(paste0("[rlambda] ", ...), call. = FALSE)

`%||%` <- function(a, b) if (is.null(a)) b else a

# Packages that ship with every R: never bundled, never checked.
rl_base_packages <- c(
  "base", "compiler", "datasets", "graphics", "grDevices", "grid", "methods",
  "parallel", "splines", "stats", "stats4", "tcltk", "tools", "utils"
)

# The package that provides a model class, for classes whose package cannot
# be found from a loaded namespace (the point is to name a package that is
# *missing*, so it cannot be looked up in that package).
rl_known_classes <- c(
  ranger = "ranger", randomForest = "randomForest", train = "caret",
  recipe = "recipes", gbm = "gbm", xgb.Booster = "xgboost", glmnet = "glmnet",
  cv.glmnet = "glmnet", svm = "e1071", naiveBayes = "e1071", rpart = "rpart",
  nnet = "nnet", multinom = "nnet", lda = "MASS", qda = "MASS", polr = "MASS",
  negbin = "MASS", rlm = "MASS", gam = "mgcv", earth = "earth", C5.0 = "C50",
  cubist = "Cubist", ksvm = "kernlab", coxph = "survival", survreg = "survival",
  naive_bayes = "naivebayes", lmerMod = "lme4", glmerMod = "lme4",
  model_fit = "parsnip", workflow = "workflows"
)

# Read a model file. The caller has checked where the file came from (and,
# with a manifest, its sha256) before this runs: readRDS of an untrusted file
# can run code in R < 4.4.0 (CVE-2024-27322). An object that refers to a
# package namespace makes readRDS load it; a missing one is silently rebound
# to .GlobalEnv (R warns only when _R_NO_REPORT_MISSING_NAMESPACES_ is
# "false"), so the warning is switched on and turned into a refusal that
# names the package.
rl_read <- function(path) {
  old <- Sys.getenv("_R_NO_REPORT_MISSING_NAMESPACES_", unset = NA)
  Sys.setenv("_R_NO_REPORT_MISSING_NAMESPACES_" = "false")
  on.exit(if (is.na(old)) Sys.unsetenv("_R_NO_REPORT_MISSING_NAMESPACES_")
          else Sys.setenv("_R_NO_REPORT_MISSING_NAMESPACES_" = old))
  missing <- character(0)
  fit <- withCallingHandlers(
    tryCatch(readRDS(path), error = function(e) {
      pkg <- rl_missing_in(conditionMessage(e))
      if (length(pkg)) rl_refuse_missing(pkg[[1L]], conditionMessage(e))
      stop(e)
    }),
    warning = function(w) {
      pkg <- rl_missing_in(conditionMessage(w))
      if (length(pkg)) {
        missing <<- c(missing, pkg)
        invokeRestart("muffleWarning")
      }
    }
  )
  if (length(missing)) rl_refuse_missing(missing[[1L]])
  fit
}

# Package names in R's "there is no package called 'x'" and "namespace 'x'
# is not available" messages (with plain or typographic quotes).
rl_missing_in <- function(msg) {
  pat <- "(?:no package called|namespace) [\u2018'\"]([A-Za-z0-9.]+)[\u2019'\"]"
  m <- regmatches(msg, gregexpr(pat, msg, perl = TRUE))[[1L]]
  unique(sub(pat, "\\1", m, perl = TRUE))
}

rl_refuse_missing <- function(pkg, detail = NULL) {
  if (is.null(detail) || !nzchar(detail)) {
    rl_refuse("the model needs R package '", pkg, "', which is not installed in this R library")
  }
  rl_refuse("the model needs R package '", pkg, "', which cannot be loaded from this R library: ",
            trimws(detail))
}

# ---------------------------------------------------------------------------
# Packages

# Where predict.<cls> comes from, if some installed package registers it.
# Loaded namespaces are asked first (cheap); then the NAMESPACE files of the
# installed packages are read, which takes a moment but only runs for classes
# this file does not know.
rl_method_package <- function(cls) {
  m <- getS3method("predict", cls, optional = TRUE)
  if (!is.null(m)) {
    env <- environment(m)
    if (!is.null(env) && isNamespace(env)) return(getNamespaceName(env)[[1L]])
  }
  for (lib in .libPaths()) {
    for (pkg in list.files(lib)) {
      ns <- file.path(lib, pkg, "NAMESPACE")
      if (!file.exists(ns)) next
      info <- tryCatch(parseNamespaceFile(pkg, lib), error = function(e) NULL)
      s3 <- info$S3methods
      if (!is.null(s3) && nrow(s3) && any(s3[, 1L] == "predict" & s3[, 2L] == cls)) return(pkg)
    }
  }
  NULL
}

# Namespaces an object refers to: environments of functions and formulas
# stored inside it. Depth-limited, and environments are not searched (a
# formula's environment can hold a whole workspace).
rl_namespaces_in <- function(x, depth = 0L) {
  if (depth > 6L) return(character(0))
  out <- character(0)
  env <- if (is.function(x) || inherits(x, "formula")) environment(x) else if (is.environment(x)) x else NULL
  if (!is.null(env) && isNamespace(env)) out <- getNamespaceName(env)[[1L]]
  if (is.list(x) && !is.data.frame(x)) {
    for (el in x) out <- c(out, rl_namespaces_in(el, depth + 1L))
  }
  unique(out)
}

# The non-base R packages a model needs at predict time: the packages of its
# classes and of the models and preprocessing it wraps. With recursive = TRUE
# (packaging), their Depends and Imports are added, recursively.
rl_packages <- function(fit, recursive = FALSE) {
  direct <- rl_direct_packages(fit)
  direct <- setdiff(unique(direct), rl_base_packages)
  if (!recursive) return(direct)
  absent <- direct[!vapply(direct, function(p) nzchar(system.file(package = p)), logical(1))]
  if (length(absent)) rl_refuse_missing(absent[[1L]])
  db <- utils::installed.packages()
  deps <- tools::package_dependencies(direct, db = db, which = c("Depends", "Imports"),
                                      recursive = TRUE)
  all <- unique(c(direct, unlist(deps, use.names = FALSE)))
  sort(setdiff(all, c(rl_base_packages, "R")))
}

rl_direct_packages <- function(fit) {
  out <- character(0)
  if (inherits(fit, "rlambda_bundle")) {
    # Recorded when the bundle was written, so the names are known even
    # where the packages are not installed.
    out <- c(as.character(fit$packages), rl_direct_packages(fit$model))
    if (!is.null(fit$recipe)) out <- c(out, rl_direct_packages(fit$recipe))
    return(unique(out))
  }
  cl <- class(fit)
  if (isS4(fit) && !is.null(attr(cl, "package"))) out <- c(out, attr(cl, "package"))
  known <- unname(rl_known_classes[intersect(cl, names(rl_known_classes))])
  out <- c(out, known)
  # Only a class this file does not know is looked up, first class first:
  # the look-up may read every installed package's NAMESPACE file.
  if (!length(known) && !any(cl %in% c("lm", "glm", "mlm"))) {
    for (c1 in cl) {
      pkg <- rl_method_package(c1)
      if (!is.null(pkg)) { out <- c(out, pkg); break }
    }
  }
  if (inherits(fit, "train")) {
    out <- c(out, as.character(fit$modelInfo$library))
    if (!is.null(fit$finalModel)) out <- c(out, rl_direct_packages(fit$finalModel))
    if (!is.null(fit$preProcess)) out <- c(out, "caret")
  }
  if (inherits(fit, "recipe")) {
    req <- tryCatch(as.character(recipes::required_pkgs(fit)), error = function(e) character(0))
    out <- c(out, "recipes", req)
  }
  unique(c(out, rl_namespaces_in(unclass(fit))))
}

# Load every package the model needs before anything predicts, so a missing
# one is reported by name at load, not as a failed request later.
rl_require <- function(pkgs) {
  for (p in pkgs) {
    if (!nzchar(system.file(package = p))) rl_refuse_missing(p)
    ok <- tryCatch({ loadNamespace(p); TRUE }, error = function(e) conditionMessage(e))
    if (!isTRUE(ok)) {
      dep <- setdiff(rl_missing_in(ok), p)
      if (length(dep)) {
        rl_refuse("the model needs R package '", p, "', which needs R package '", dep[[1L]],
                  "', which is not installed in this R library")
      }
      rl_refuse_missing(p, ok)
    }
  }
}

# ---------------------------------------------------------------------------
# Prototype: what a model accepts, derived from the object

# types: "numeric" | "integer" | "logical" | "factor" | "character"
rl_proto <- function(names, types, levels = NULL, ordered = NULL) {
  n <- length(names)
  list(
    names = as.character(names),
    types = as.character(types),
    levels = levels %||% rep(list(character(0)), n),
    ordered = ordered %||% rep(FALSE, n)
  )
}

rl_type_of <- function(x) {
  if (is.factor(x)) "factor"
  else if (is.logical(x)) "logical"
  else if (is.integer(x)) "integer"
  else if (is.character(x)) "character"
  else if (is.numeric(x) && is.null(dim(x))) "numeric"
  else paste(class(x), collapse = "/")
}

# From a zero-row data frame of the training predictors (vetiver's ptype,
# caret's ptype). Character columns take their accepted values from `known`
# (e.g. the recipe's recorded levels) when there are any.
rl_proto_frame <- function(ptype, known = list()) {
  nm <- names(ptype)
  types <- vapply(ptype, rl_type_of, character(1), USE.NAMES = FALSE)
  levels <- lapply(nm, function(v) {
    x <- ptype[[v]]
    if (is.factor(x)) levels(x) else if (is.character(x) && length(known[[v]])) as.character(known[[v]])
    else character(0)
  })
  ordered <- vapply(ptype, is.ordered, logical(1), USE.NAMES = FALSE)
  rl_proto(nm, types, levels, ordered)
}

# From a formula model: terms + dataClasses + xlevels, with the columns the
# object kept (fit$model, fit$data) telling integers from doubles.
rl_proto_terms <- function(fit, tt) {
  tt <- delete.response(tt)
  vars <- all.vars(tt)
  dc <- attr(tt, "dataClasses")
  xl <- fit$xlevels %||% Filter(is.character, fit$forest$xlevels)
  kept <- list(fit$model, if (is.data.frame(fit$data)) fit$data)
  # Expressions of the predictors as the model frame names them ("log(x)").
  exprs <- vapply(as.list(attr(tt, "variables"))[-1L], function(e) paste(deparse(e, 500L), collapse = " "),
                  character(1))
  types <- character(length(vars))
  levels <- rep(list(character(0)), length(vars))
  ordered <- logical(length(vars))
  for (i in seq_along(vars)) {
    v <- vars[[i]]
    cl <- if (!is.null(dc) && v %in% names(dc)) dc[[v]] else NA_character_
    uses <- exprs[vapply(exprs, function(e) v %in% all.vars(str2lang(e)), logical(1))]
    wrapped <- paste0(c("factor(", "as.factor(", "ordered(", "as.ordered("), v, ")")
    if (!is.na(cl) && cl %in% c("factor", "ordered")) {
      types[[i]] <- "factor"; levels[[i]] <- as.character(xl[[v]]); ordered[[i]] <- cl == "ordered"
    } else if (!is.na(cl) && cl == "character") {
      types[[i]] <- "character"; levels[[i]] <- as.character(xl[[v]] %||% character(0))
    } else if (!is.na(cl) && cl == "logical") {
      types[[i]] <- "logical"
    } else if (length(uses) && all(uses %in% wrapped) && !is.null(xl[[uses[[1L]]]])) {
      # x only enters as factor(x): it is sent as one of the levels the
      # model saw, and R's factor() maps it back to those levels.
      types[[i]] <- "factor"; levels[[i]] <- as.character(xl[[uses[[1L]]]])
    } else {
      col <- NULL
      for (k in kept) if (!is.null(k) && v %in% names(k)) { col <- k[[v]]; break }
      types[[i]] <- if (is.null(col)) {
        if (is.na(cl)) "numeric" else if (cl == "numeric") "numeric" else cl
      } else rl_type_of(col)
      if (types[[i]] == "factor") levels[[i]] <- levels(col)
    }
  }
  rl_proto(vars, types, levels, ordered)
}

rl_terms <- function(fit) {
  if (inherits(fit, c("ranger", "rlambda_bundle"))) return(NULL)
  tryCatch(terms(fit), error = function(e) NULL)
}

rl_proto_of <- function(fit) {
  if (inherits(fit, "train") && is.data.frame(fit$ptype) && ncol(fit$ptype)) {
    return(rl_proto_frame(fit$ptype))
  }
  tt <- rl_terms(fit)
  if (!is.null(tt)) return(rl_proto_terms(fit, tt))
  if (inherits(fit, "ranger")) {
    f <- fit$forest
    nm <- f$independent.variable.names
    cov <- f$covariate.levels
    unordered <- nm[!as.logical(f$is.ordered %||% rep(TRUE, length(nm)))]
    if (length(unordered) && is.null(cov)) {
      rl_refuse("this ranger model does not record the levels of its factor predictor(s) ",
                paste(unordered, collapse = ", "),
                "; save it with rlambda_bundle(model, data) from models/bundle.R")
    }
    levels <- lapply(nm, function(v) as.character(cov[[v]] %||% character(0)))
    types <- ifelse(lengths(levels) > 0L, "factor", "numeric")
    return(rl_proto(nm, types, levels))
  }
  if (inherits(fit, "randomForest") && !is.null(fit$forest$xlevels)) {
    xl <- fit$forest$xlevels
    levels <- lapply(xl, function(l) if (is.character(l)) l else character(0))
    types <- ifelse(lengths(levels) > 0L, "factor", "numeric")
    return(rl_proto(names(xl), types, unname(levels)))
  }
  rl_refuse("cannot tell which predictors a '", class(fit)[[1L]], "' model needs (it records no ",
            "terms and no prototype); save it with rlambda_bundle(model, data) from models/bundle.R")
}

# ---------------------------------------------------------------------------
# Outputs: what a model returns and how to get it

# A list(kind, classes, predict = function(newdata)) for one model object.
rl_outputs <- function(fit) {
  if (inherits(fit, "rlambda_bundle")) {
    inner <- rl_outputs(fit$model)
    rec <- fit$recipe
    if (is.null(rec)) return(inner)
    inner_predict <- inner$predict
    # bake() applies the steps learned at prep() time to the new rows.
    inner$predict <- function(newdata) inner_predict(recipes::bake(rec, new_data = newdata))
    return(inner)
  }
  if (class(fit)[[1L]] %in% c("lm", "glm")) return(rl_outputs_glm(fit))
  if (inherits(fit, "randomForest")) return(rl_outputs_rf(fit))
  if (inherits(fit, "ranger")) return(rl_outputs_ranger(fit))
  if (inherits(fit, "train")) return(rl_outputs_train(fit))
  # Anything else: its own predict, which must give one number per row.
  list(kind = "regression", classes = character(0),
       predict = function(newdata) as.double(predict(fit, newdata = newdata)))
}

rl_outputs_glm <- function(fit) {
  fam <- if (inherits(fit, "glm")) family(fit) else NULL
  binary <- !is.null(fam) && fam$family %in% c("binomial", "quasibinomial")
  classes <- character(0)
  if (binary) {
    y <- fit$model[[1L]]
    classes <- if (is.factor(y)) levels(y) else if (is.logical(y)) c("FALSE", "TRUE") else c("0", "1")
  }
  list(kind = if (binary) "binary" else "regression", classes = classes, predict = rl_predictor(fit))
}

# Class probabilities as an n x K matrix in `classes` order, plus the index
# of the predicted class: the n x (K+1) shape the scorer returns, or P(second
# class) for two classes. `pick` is the 1-based predicted class per row.
rl_class_output <- function(prob, classes, pick) {
  prob <- prob[, classes, drop = FALSE]
  storage.mode(prob) <- "double"
  if (length(classes) == 2L) return(as.double(prob[, 2L]))
  cbind(unname(prob), as.double(pick))
}

rl_outputs_rf <- function(fit) {
  if (identical(fit$type, "unsupervised")) rl_refuse("an unsupervised randomForest has nothing to predict")
  if (identical(fit$type, "regression")) {
    return(list(kind = "regression", classes = character(0),
                predict = function(newdata) as.double(predict(fit, newdata = newdata, type = "response"))))
  }
  classes <- as.character(fit$classes)
  cutoff <- fit$forest$cutoff %||% rep(1 / length(classes), length(classes))
  list(
    kind = if (length(classes) == 2L) "binary" else "multiclass", classes = classes,
    predict = function(newdata) {
      prob <- predict(fit, newdata = newdata, type = "prob")
      # randomForest's own class is the largest vote/cutoff with ties broken
      # at random; here ties go to the first class, so a result is repeatable.
      pick <- max.col(sweep(prob[, classes, drop = FALSE], 2L, cutoff, "/"), ties.method = "first")
      rl_class_output(prob, classes, pick)
    }
  )
}

rl_outputs_ranger <- function(fit) {
  tt <- fit$treetype
  if (tt == "Regression") {
    return(list(kind = "regression", classes = character(0),
                predict = function(newdata) as.double(predict(fit, data = newdata, num.threads = 1L)$predictions)))
  }
  classes <- as.character(fit$forest$levels)
  kind <- if (length(classes) == 2L) "binary" else "multiclass"
  if (tt == "Probability estimation") {
    return(list(kind = kind, classes = classes, predict = function(newdata) {
      prob <- predict(fit, data = newdata, num.threads = 1L)$predictions
      if (!is.matrix(prob)) prob <- matrix(prob, nrow = 1L, dimnames = list(NULL, names(prob)))
      rl_class_output(prob, classes, max.col(prob[, classes, drop = FALSE], ties.method = "first"))
    }))
  }
  if (tt == "Classification") {
    return(list(kind = kind, classes = classes, predict = function(newdata) {
      # A classification forest keeps no probabilities: the share of trees
      # voting for each class is used, as randomForest's type = "prob" does.
      votes <- predict(fit, data = newdata, predict.all = TRUE, num.threads = 1L)$predictions
      if (!is.matrix(votes)) votes <- matrix(votes, nrow = 1L)
      prob <- vapply(seq_along(classes), function(k) rowMeans(votes == k), numeric(nrow(votes)))
      if (!is.matrix(prob)) prob <- matrix(prob, nrow = 1L)
      colnames(prob) <- classes
      rl_class_output(prob, classes, max.col(prob, ties.method = "first"))
    }))
  }
  rl_refuse("ranger models of type '", tt, "' are not supported (only classification, ",
            "probability and regression forests)")
}

rl_outputs_train <- function(fit) {
  if (identical(fit$modelType, "Regression")) {
    return(list(kind = "regression", classes = character(0),
                predict = function(newdata) as.double(predict(fit, newdata = newdata, type = "raw"))))
  }
  classes <- as.character(fit$levels)
  if (!isTRUE(fit$control$classProbs)) {
    rl_refuse("this caret model was trained without class probabilities; refit it with ",
              "trainControl(classProbs = TRUE)")
  }
  list(kind = if (length(classes) == 2L) "binary" else "multiclass", classes = classes,
       predict = function(newdata) {
         prob <- as.matrix(predict(fit, newdata = newdata, type = "prob"))
         pick <- match(as.character(predict(fit, newdata = newdata, type = "raw")), classes)
         rl_class_output(prob, classes, pick)
       })
}

# For plain lm/glm it does what predict.lm does, minus per-call checks that
# cannot fail on validated input: a third faster for one row, the same
# numbers. Anything else goes through the model's own predict method.
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
  via_frame <- function(newdata) {
    mf <- model.frame(tt, newdata, xlev = xlev)
    x <- model.matrix(tt, mf, contrasts.arg = contr)
    as.double(linkinv(drop(x %*% beta)))
  }
  direct <- rl_direct_design(fit, tt)
  if (is.null(direct)) return(via_frame)
  function(newdata) as.double(linkinv(drop(direct(newdata) %*% beta)))
}

# For a formula of main effects only (each term a numeric or factor
# variable: no interactions, transformations or logicals) with an intercept,
# the design matrix is a column of ones, the numeric columns, and for each
# factor the rows of its contrast matrix picked by the codes. That is what
# model.matrix builds, in its column order, without model.frame's
# bookkeeping: 0.2 ms of a one-row prediction. It is used only when it
# reproduces model.matrix exactly (identical()) on rows covering every level.
rl_direct_design <- function(fit, tt) {
  labels <- attr(tt, "term.labels")
  dc <- attr(tt, "dataClasses")
  ok <- length(labels) > 0L && attr(tt, "intercept") == 1L && all(attr(tt, "order") == 1L) &&
    identical(make.names(labels), labels) && all(labels %in% names(dc)) &&
    all(dc[labels] %in% c("numeric", "factor"))
  if (!isTRUE(ok)) return(NULL)
  cms <- lapply(labels, function(v) {
    if (dc[[v]] != "factor") return(NULL)
    lv <- fit$xlevels[[v]]
    ct <- fit$contrasts[[v]]
    if (is.null(lv) || is.null(ct)) return(NULL)
    cm <- if (is.matrix(ct)) ct else do.call(ct, list(lv))
    if (!is.matrix(cm) || nrow(cm) != length(lv)) return(NULL)
    unname(cm)
  })
  if (any(vapply(seq_along(labels), function(j) dc[[labels[[j]]]] == "factor" && is.null(cms[[j]]), NA))) {
    return(NULL)
  }
  design <- function(newdata) {
    n <- length(newdata[[labels[[1L]]]])
    parts <- lapply(seq_along(labels), function(j) {
      x <- newdata[[labels[[j]]]]
      if (is.null(cms[[j]])) as.double(x) else cms[[j]][as.integer(x), , drop = FALSE]
    })
    do.call(cbind, c(list(rep(1, n)), parts))
  }
  # Check against model.matrix on rows that cycle through every level.
  n <- max(7L, vapply(fit$xlevels, length, 1L))
  probe <- lapply(labels, function(v) {
    if (dc[[v]] == "factor") {
      lv <- fit$xlevels[[v]]
      factor(lv[(seq_len(n) - 1L) %% length(lv) + 1L], levels = lv)
    } else {
      c(0, 1, -2.5, 1e-3, 123.456, 7, 0.1)[(seq_len(n) - 1L) %% 7L + 1L]
    }
  })
  names(probe) <- labels
  probe <- as.data.frame(probe, stringsAsFactors = FALSE, optional = TRUE)
  want <- tryCatch({
    mf <- model.frame(tt, probe, xlev = fit$xlevels)
    model.matrix(tt, mf, contrasts.arg = fit$contrasts)
  }, error = function(e) NULL)
  got <- tryCatch(design(probe), error = function(e) NULL)
  if (is.null(want) || is.null(got) || !identical(dim(want), dim(got)) ||
      !identical(unname(unclass(want))[seq_along(got)], as.vector(got))) {
    return(NULL)
  }
  design
}

# ---------------------------------------------------------------------------
# Loading

rl_formula_text <- function(fit) {
  f <- tryCatch(formula(fit), error = function(e) NULL)
  if (is.null(f) || !inherits(f, "formula")) return("")
  paste(deparse(f, width.cutoff = 500L), collapse = " ")
}

rl_preprocessing <- function(fit) {
  if (inherits(fit, "rlambda_bundle") && !is.null(fit$recipe)) {
    steps <- vapply(fit$recipe$steps, function(s) class(s)[[1L]], character(1))
    return(paste0("recipe: ", paste(steps, collapse = ", ")))
  }
  if (inherits(fit, "train") && !is.null(fit$preProcess)) {
    steps <- setdiff(names(fit$preProcess$method), "ignore")
    return(paste0("caret preProcess: ", paste(steps, collapse = ", ")))
  }
  ""
}

# Everything Python needs, from one R call: the description and the scorer.
# The model's packages are loaded first; then one synthetic row is scored, so
# a model whose predict does not work here is refused at load.
rl_load <- function(path) {
  fit <- rl_read(path)
  pkgs <- rl_packages(fit)
  rl_require(pkgs)
  inner <- if (inherits(fit, "rlambda_bundle")) fit$model else fit
  proto <- if (inherits(fit, "rlambda_bundle")) rl_proto_frame(fit$ptype, fit$levels %||% list())
           else rl_proto_of(fit)
  nolevels <- proto$names[proto$types == "factor" & lengths(proto$levels) == 0L]
  if (length(nolevels)) {
    rl_refuse("this ", class(inner)[[1L]], " model does not record the levels of factor predictor(s) ",
              paste(nolevels, collapse = ", "), "; save it with rlambda_bundle(model, data) from models/bundle.R")
  }
  out <- rl_outputs(fit)
  has_predict <- inherits(inner, c("lm", "glm")) ||
    any(vapply(class(inner), function(c1) !is.null(getS3method("predict", c1, optional = TRUE)), logical(1))) ||
    (isS4(inner) && methods::existsMethod("predict", class(inner)))
  if (!has_predict) {
    rl_refuse("R has no predict method for a '", class(inner)[[1L]], "' model in this R library",
              if (length(pkgs)) paste0(" (it needs ", paste(pkgs, collapse = ", "), ")") else "")
  }
  scorer <- rl_scorer_of(proto, out)
  rl_smoke(scorer, proto, out)
  fam <- if (inherits(inner, "glm")) family(inner) else NULL
  list(
    description = list(
      class = class(inner)[[1L]],
      kind = out$kind,
      classes = as.character(out$classes),
      family = if (is.null(fam)) "" else fam$family,
      link = if (is.null(fam)) "" else fam$link,
      formula = rl_formula_text(inner),
      preprocessing = rl_preprocessing(fit),
      packages = as.character(pkgs),
      names = proto$names,
      types = proto$types,
      levels = proto$levels
    ),
    scorer = scorer
  )
}

# A function of (cols, n) that returns the model's output for n rows.
# Columns arrive as a plain list in the prototype's order, factors as 1-based
# integer codes; the data frame is assembled here, which costs a few
# microseconds instead of data.frame()'s checks and copies.
rl_scorer_of <- function(proto, out) {
  nm <- proto$names
  fac <- which(proto$types == "factor")
  lv <- proto$levels
  fclass <- lapply(proto$ordered, function(o) if (o) c("ordered", "factor") else "factor")
  predict_frame <- out$predict
  function(cols, n) {
    for (i in fac) {
      x <- cols[[i]]
      attr(x, "levels") <- lv[[i]]
      class(x) <- fclass[[i]]
      cols[[i]] <- x
    }
    names(cols) <- nm
    attr(cols, "row.names") <- c(NA_integer_, -n)
    class(cols) <- "data.frame"
    predict_frame(cols)
  }
}

# Score one made-up row of the right types and check the shape of what
# comes back; any error refuses the model with R's message.
rl_smoke <- function(scorer, proto, out) {
  # Types JSON cannot carry are refused by Python, with every such name.
  if (!all(proto$types %in% c("numeric", "integer", "logical", "factor", "character"))) return(invisible(FALSE))
  cols <- Map(function(type, lv) {
    switch(type, numeric = 1, integer = 1L, logical = FALSE, factor = 1L,
           character = if (length(lv)) lv[[1L]] else "a")
  }, proto$types, proto$levels)
  p <- tryCatch(scorer(unname(cols), 1L), error = function(e) {
    rl_refuse("R cannot predict with this model: ", conditionMessage(e))
  })
  width <- if (out$kind == "multiclass") length(out$classes) + 1L else 1L
  if (!is.double(p) || length(p) != width) {
    rl_refuse("the model's predict returned ", paste(class(p), collapse = "/"), " of length ",
              length(p), " for one row, not ", width, " number(s)")
  }
  invisible(TRUE)
}

rl_version <- function() {
  paste(R.version$major, R.version$minor, sep = ".")
}
