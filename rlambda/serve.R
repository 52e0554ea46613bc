# Helpers of the embedded R session, defined once at start-up in their own
# environment. They receive R objects built from values that Python has
# already validated; no request text is ever parsed or evaluated as R code.
#
# The contract with rsession.py: rl_load(path, check = TRUE) returns
#   list(description = <plain list of character/logical/number vectors>,
#        scorer      = function(cols, n) -> double vector)
# where the scorer returns n values for "binary" (P(second class)) and
# "regression" models, n * (K + 1) values (column-major n x (K+1) matrix:
# K class probabilities, then the 1-based index of the predicted class) for
# "multiclass" models, and n 1-based class indices for "label" models. The
# description's `check` reports rl_check(): the scorer against R's own
# predict at load.
#
# Refusals meant for the person deploying the model are raised with
# rl_refuse(), whose message starts with "[rlambda] " so that Python can tell
# them from R's own errors and show them verbatim; "[rlambda] [unsupported] "
# marks a model outside the table or one whose answers differ from R's
# (served as 503).

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
  xl <- fit$xlevels %||% attr(fit, "xlevels") %||% Filter(is.character, fit$forest$xlevels)
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
    } else if (!is.na(cl) && cl == "numeric") {
      # dataClasses decide: an integer-stored column (read.csv's gre) is a
      # number to the model, and predict() takes 650.5 for it.
      types[[i]] <- "numeric"
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

# nls: the formula's variables that are not parameters, typed by the
# dataClasses nls records.
rl_proto_nls <- function(fit) {
  f <- formula(fit)
  vars <- setdiff(all.vars(f[[3L]]), names(coef(fit)))
  dc <- fit$dataClasses
  types <- vapply(vars, function(v) {
    cl <- if (!is.null(dc) && v %in% names(dc)) dc[[v]] else "numeric"
    if (cl %in% c("numeric", "logical")) cl else paste0("nls-", cl)
  }, character(1), USE.NAMES = FALSE)
  rl_proto(vars, types)
}

rl_terms <- function(fit) {
  if (inherits(fit, c("ranger", "rlambda_bundle"))) return(NULL)
  tryCatch(terms(fit), error = function(e) NULL)
}

rl_proto_of <- function(fit) {
  if (inherits(fit, "nls")) return(rl_proto_nls(fit))
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
# Outputs: the one table of supported classes
#
# A model is served by the first entry whose class it inherits(). Each entry
# names R's own call that scores the class (its natural type) and builds
#   list(kind, classes, predict = function(newdata) -> the scorer's output,
#        reference = function(newdata) -> list(value | prob, class))
# `predict` is the served path; `reference` is R's own predict with the
# natural type, written independently of `predict`, so that rl_check() can
# compare the two at load. Output kinds:
#   regression  n numbers                                  {"prediction"}
#   binary      n values of P(second class)               {"result", "probability"}
#   multiclass  n x (K+1): K probabilities, 1-based class {"class", "probabilities"}
#   label       n 1-based class indices                   {"class"}
# A classifier never answers a class code as a number: its kind is one of
# the last three, and Python turns indices into the class names.

rl_table <- list(
  list(class = "rlambda_bundle", package = "", call = "the bundle's declared predict (models/bundle.R)"),
  list(class = "train", package = "caret", call = 'predict(fit, newdata, type = "prob") and type = "raw"'),
  list(class = "ranger", package = "ranger", call = "predict(fit, data = newdata)$predictions"),
  list(class = "randomForest", package = "randomForest", call = 'predict(fit, newdata, type = "prob") and type = "response"'),
  list(class = "rpart", package = "rpart", call = 'predict(fit, newdata, type = "vector"), or type = "prob" and "class"'),
  list(class = "multinom", package = "nnet", call = 'predict(fit, newdata, type = "probs") and type = "class"'),
  list(class = "polr", package = "MASS", call = 'predict(fit, newdata, type = "probs") and type = "class"'),
  list(class = "lda", package = "MASS", call = "predict(fit, newdata)$posterior and $class"),
  list(class = "qda", package = "MASS", call = "predict(fit, newdata)$posterior and $class"),
  list(class = "loess", package = "stats", call = "predict(fit, newdata)"),
  list(class = "nls", package = "stats", call = "predict(fit, newdata)"),
  list(class = "negbin", package = "MASS", call = 'predict(fit, newdata, type = "response")'),
  list(class = "bam", package = "mgcv", call = 'predict(fit, newdata, type = "response")'),
  list(class = "gam", package = "mgcv", call = 'predict(fit, newdata, type = "response")'),
  list(class = "glm", package = "stats", call = 'predict(fit, newdata, type = "response")'),
  list(class = "lm", package = "stats", call = 'predict(fit, newdata, type = "response")')
)

rl_supported <- function() {
  vapply(rl_table, function(e) if (nzchar(e$package)) paste0(e$class, " (", e$package, ")") else e$class,
         character(1))
}

# The table entry that serves `fit`, or a refusal that names the class, lists
# what is supported and shows how to serve it anyway. "[unsupported] " tells
# Python to answer 503 (the model is unavailable, not the server broken).
rl_entry <- function(fit) {
  for (e in rl_table) {
    if (inherits(fit, e$class) && !inherits(fit, "mlm")) return(e)
  }
  rl_refuse("[unsupported] a '", class(fit)[[1L]], "' model (class ", paste(class(fit), collapse = "/"),
            ") is not one rlambda knows how to score exactly as R's own predict does. Supported: ",
            paste(rl_supported(), collapse = ", "), ". To serve it anyway, bundle it with the predict ",
            "function and output kind it needs, e.g. source(\"models/bundle.R\"); ",
            "rlambda_save(rlambda_bundle(fit, data, predict = function(model, newdata) ",
            "predict(model, newdata), kind = \"regression\"), \"model.rds\")")
}

# A list(kind, classes, predict, reference, call) for one model object.
rl_outputs <- function(fit) {
  e <- rl_entry(fit)
  out <- switch(e$class,
    rlambda_bundle = rl_outputs_bundle(fit),
    train = rl_outputs_train(fit),
    ranger = rl_outputs_ranger(fit),
    randomForest = rl_outputs_rf(fit),
    rpart = rl_outputs_rpart(fit),
    multinom = rl_outputs_probs(fit, "probs"),
    polr = rl_outputs_probs(fit, "probs"),
    lda = rl_outputs_da(fit),
    qda = rl_outputs_da(fit),
    loess = rl_outputs_plain(fit),
    nls = rl_outputs_plain(fit),
    rl_outputs_glm(fit)
  )
  out$call <- out$call %||% e$call
  out$entry <- e$class
  out
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

rl_as_matrix <- function(prob, classes, n) {
  if (is.matrix(prob) || is.data.frame(prob)) return(as.matrix(prob))
  # predict() drops a one-row matrix to a vector named by class, and
  # two-class models (multinom) give P(second class) alone, one per row.
  if (n == 1L && length(prob) == length(classes) && length(classes) > 1L) {
    return(matrix(prob, nrow = 1L, dimnames = list(NULL, names(prob) %||% classes)))
  }
  if (length(classes) == 2L && length(prob) == n) {
    return(matrix(c(1 - prob, prob), ncol = 2L, dimnames = list(NULL, classes)))
  }
  rl_refuse("[unsupported] predict returned ", length(prob), " probabilities for ", n, " row(s) and ",
            length(classes), " classes")
}

rl_kind_of <- function(classes) if (length(classes) == 2L) "binary" else "multiclass"

rl_outputs_plain <- function(fit) {
  list(kind = "regression", classes = character(0),
       predict = function(newdata) as.double(predict(fit, newdata = newdata)),
       reference = function(newdata) list(value = predict(fit, newdata)))
}

rl_outputs_glm <- function(fit) {
  fam <- if (inherits(fit, "glm")) family(fit) else NULL
  binary <- !is.null(fam) && fam$family %in% c("binomial", "quasibinomial")
  classes <- character(0)
  if (binary) {
    y <- fit$model[[1L]]
    classes <- if (is.factor(y)) levels(y) else if (is.logical(y)) c("FALSE", "TRUE") else c("0", "1")
  }
  list(kind = if (binary) "binary" else "regression", classes = classes, predict = rl_predictor(fit),
       reference = function(newdata) {
         v <- predict(fit, newdata = newdata, type = "response")
         if (binary) list(prob = unname(cbind(1 - v, v))) else list(value = v)
       })
}

rl_outputs_rpart <- function(fit) {
  if (identical(fit$method, "class")) {
    classes <- as.character(attr(fit, "ylevels"))
    return(list(kind = rl_kind_of(classes), classes = classes,
      predict = function(newdata) {
        prob <- rl_as_matrix(predict(fit, newdata = newdata, type = "prob"), classes, nrow(newdata))
        colnames(prob) <- classes
        # rpart's class weighs a loss matrix: its own choice, not the largest probability
        pick <- as.integer(predict(fit, newdata = newdata, type = "class"))
        rl_class_output(prob, classes, pick)
      },
      reference = function(newdata) list(prob = predict(fit, newdata, type = "prob"),
                                         class = predict(fit, newdata, type = "class"))))
  }
  if (!fit$method %in% c("anova", "poisson", "exp")) {
    rl_refuse("[unsupported] rpart models of method '", fit$method, "' are not supported ",
              "(anova, poisson, exp and class are)")
  }
  list(kind = "regression", classes = character(0),
       predict = function(newdata) as.double(predict(fit, newdata = newdata, type = "vector")),
       reference = function(newdata) list(value = predict(fit, newdata, type = "vector")))
}

# multinom and polr: predict(type = "probs") and type = "class".
rl_outputs_probs <- function(fit, type) {
  classes <- as.character(fit$lev)
  list(kind = rl_kind_of(classes), classes = classes,
    predict = function(newdata) {
      prob <- rl_as_matrix(predict(fit, newdata = newdata, type = type), classes, nrow(newdata))
      if (is.null(colnames(prob)) || !all(classes %in% colnames(prob))) colnames(prob) <- classes
      rl_class_output(prob, classes, max.col(prob[, classes, drop = FALSE], ties.method = "first"))
    },
    reference = function(newdata) list(prob = predict(fit, newdata, type = type),
                                       class = predict(fit, newdata, type = "class")))
}

# MASS::lda and qda: the posterior probabilities and the class.
rl_outputs_da <- function(fit) {
  classes <- as.character(fit$lev)
  list(kind = rl_kind_of(classes), classes = classes,
    predict = function(newdata) {
      prob <- predict(fit, newdata = newdata)$posterior
      rl_class_output(prob, classes, max.col(prob[, classes, drop = FALSE], ties.method = "first"))
    },
    reference = function(newdata) {
      p <- predict(fit, newdata)
      list(prob = p$posterior, class = p$class)
    })
}

rl_outputs_bundle <- function(fit) {
  if (is.function(fit$predict)) return(rl_outputs_declared(fit))
  inner <- rl_outputs(fit$model)
  rec <- fit$recipe
  if (is.null(rec)) return(inner)
  inner_predict <- inner$predict
  inner_reference <- inner$reference
  # bake() applies the steps learned at prep() time to the new rows.
  inner$predict <- function(newdata) inner_predict(recipes::bake(rec, new_data = newdata))
  inner$reference <- function(newdata) inner_reference(recipes::bake(rec, new_data = newdata))
  inner$call <- paste0(inner$call %||% rl_entry(fit$model)$call, " after recipes::bake()")
  inner
}

# A bundle that declares predict = function(model, newdata) and its kind:
# regression -> numbers; binary/multiclass -> a probability matrix with one
# column per class (a vector of P(second class) for binary); label -> the
# classes (factor or character).
rl_outputs_declared <- function(fit) {
  kind <- as.character(fit$kind %||% "")
  if (!kind %in% c("regression", "binary", "multiclass", "label")) {
    rl_refuse("[unsupported] the bundle declares output kind '", kind,
              "'; use regression, binary, multiclass or label")
  }
  classes <- as.character(fit$classes %||% character(0))
  if (kind != "regression" && length(classes) < 2L) {
    rl_refuse("[unsupported] a ", kind, " bundle must declare its classes (classes = c(...))")
  }
  model <- fit$model
  rec <- fit$recipe
  f <- fit$predict
  own <- function(newdata) {
    if (!is.null(rec)) newdata <- recipes::bake(rec, new_data = newdata)
    f(model, newdata)
  }
  served <- switch(kind,
    regression = function(newdata) as.double(own(newdata)),
    label = function(newdata) as.double(match(as.character(own(newdata)), classes)),
    function(newdata) {
      prob <- rl_as_matrix(own(newdata), classes, nrow(newdata))
      rl_class_output(prob, classes, max.col(prob[, classes, drop = FALSE], ties.method = "first"))
    })
  list(kind = kind, classes = classes, predict = served, call = "the bundle's declared predict",
       reference = function(newdata) {
         v <- own(newdata)
         switch(kind, regression = list(value = v), label = list(class = v),
                list(prob = if (is.matrix(v) || is.data.frame(v)) v else unname(cbind(1 - v, v))))
       })
}

rl_outputs_rf <- function(fit) {
  if (identical(fit$type, "unsupervised")) rl_refuse("[unsupported] an unsupervised randomForest has nothing to predict")
  if (identical(fit$type, "regression")) {
    return(list(kind = "regression", classes = character(0),
                predict = function(newdata) as.double(predict(fit, newdata = newdata, type = "response")),
                reference = function(newdata) list(value = predict(fit, newdata))))
  }
  classes <- as.character(fit$classes)
  cutoff <- fit$forest$cutoff %||% rep(1 / length(classes), length(classes))
  list(
    kind = rl_kind_of(classes), classes = classes,
    predict = function(newdata) {
      prob <- predict(fit, newdata = newdata, type = "prob")
      # randomForest's own class is the largest vote/cutoff with ties broken
      # at random; here ties go to the first class, so a result is repeatable.
      pick <- max.col(sweep(prob[, classes, drop = FALSE], 2L, cutoff, "/"), ties.method = "first")
      rl_class_output(prob, classes, pick)
    },
    reference = function(newdata) list(prob = predict(fit, newdata, type = "prob"),
                                       class = predict(fit, newdata, type = "response"))
  )
}

rl_outputs_ranger <- function(fit) {
  tt <- fit$treetype
  own <- function(newdata) predict(fit, data = newdata, num.threads = 1L)$predictions
  if (tt == "Regression") {
    return(list(kind = "regression", classes = character(0),
                predict = function(newdata) as.double(own(newdata)),
                reference = function(newdata) list(value = predict(fit, newdata, num.threads = 1L)$predictions)))
  }
  classes <- as.character(fit$forest$levels)
  if (tt == "Probability estimation") {
    return(list(kind = rl_kind_of(classes), classes = classes, predict = function(newdata) {
      prob <- rl_as_matrix(own(newdata), classes, nrow(newdata))
      rl_class_output(prob, classes, max.col(prob[, classes, drop = FALSE], ties.method = "first"))
    }, reference = function(newdata) list(prob = predict(fit, newdata, num.threads = 1L)$predictions)))
  }
  if (tt == "Classification") {
    # ranger's own predict gives a classification forest's class and nothing
    # else: that is what is served (a vote share would be our number, not R's).
    return(list(kind = "label", classes = classes,
      predict = function(newdata) as.double(match(as.character(own(newdata)), classes)),
      reference = function(newdata) {
        # ranger breaks a tied vote at random: such rows are not compared.
        votes <- predict(fit, newdata, predict.all = TRUE, num.threads = 1L)$predictions
        if (!is.matrix(votes)) votes <- matrix(votes, nrow = 1L)
        tied <- apply(votes, 1L, function(v) {
          counts <- sort(tabulate(v, length(classes)), decreasing = TRUE)
          length(counts) > 1L && counts[[1L]] == counts[[2L]]
        })
        list(class = predict(fit, newdata, num.threads = 1L)$predictions, tied = tied)
      }))
  }
  rl_refuse("[unsupported] ranger models of type '", tt, "' are not supported (only classification, ",
            "probability and regression forests)")
}

rl_outputs_train <- function(fit) {
  if (identical(fit$modelType, "Regression")) {
    return(list(kind = "regression", classes = character(0),
                predict = function(newdata) as.double(predict(fit, newdata = newdata, type = "raw")),
                reference = function(newdata) list(value = predict(fit, newdata, type = "raw"))))
  }
  classes <- as.character(fit$levels)
  if (!isTRUE(fit$control$classProbs)) {
    rl_refuse("this caret model was trained without class probabilities; refit it with ",
              "trainControl(classProbs = TRUE)")
  }
  list(kind = rl_kind_of(classes), classes = classes,
       predict = function(newdata) {
         prob <- as.matrix(predict(fit, newdata = newdata, type = "prob"))
         pick <- match(as.character(predict(fit, newdata = newdata, type = "raw")), classes)
         rl_class_output(prob, classes, pick)
       },
       reference = function(newdata) list(prob = predict(fit, newdata, type = "prob"),
                                          class = predict(fit, newdata, type = "raw")))
}

# For plain lm/glm it does what predict.lm does, minus per-call checks that
# cannot fail on validated input: a third faster for one row, the same
# numbers. Anything else goes through the model's own predict method.
rl_predictor <- function(fit) {
  # Exactly lm or glm: a subclass (negbin, gam, rlm...) has its own predict.
  plain <- (identical(class(fit), "lm") || identical(class(fit), c("glm", "lm"))) &&
    is.null(fit$call$offset) && is.null(attr(terms(fit), "offset")) &&
    !is.matrix(coef(fit))
  if (!plain) {
    return(function(newdata) as.double(predict(fit, newdata = newdata, type = "response")))
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
# The check at load: the served path against R's own predict

# Rows to check with, as two things: `cols`, the plain list Python would send
# (factors as 1-based codes), and `frame`, the same rows as an ordinary data
# frame built by data.frame()/factor(). Every factor level appears; numbers
# come from the data the object keeps (fit$model, fit$data, caret's
# trainingData, loess's x, nls's environment), else from a fixed spread.
rl_probe <- function(fit, proto) {
  inner <- if (inherits(fit, "rlambda_bundle")) fit$model else fit
  env <- tryCatch(inner$m$getEnv(), error = function(e) NULL)
  kept <- list(inner$model, if (is.data.frame(inner$data)) inner$data, inner$trainingData,
               if (is.matrix(inner$x)) inner$x, if (is.environment(env)) env)
  # Behind a recipe the model kept baked columns, not what clients send.
  if (inherits(fit, "rlambda_bundle") && !is.null(fit$recipe)) kept <- list()
  column <- function(v) {
    for (k in kept) {
      x <- if (is.matrix(k)) (if (v %in% colnames(k)) k[, v] else NULL)
           else if (is.environment(k)) get0(v, envir = k, inherits = FALSE)
           else if (!is.null(k) && v %in% names(k)) k[[v]] else NULL
      if (!is.null(x) && is.null(dim(x))) return(x)
    }
    NULL
  }
  n <- max(8L, lengths(proto$levels))
  spread <- c(1, 2.5, 0.5, 3, 1.5, 10, 0.25, 5)
  pick <- function(x) {
    # values spread through the observed ones, in a fixed order
    x <- sort(unique(x[is.finite(x)]))
    if (!length(x)) return(NULL)
    x[round(seq(1, length(x), length.out = n))][c(seq(1L, n, 2L), seq(2L, n, 2L))]
  }
  cols <- list()
  frame <- list()
  for (i in seq_along(proto$names)) {
    v <- proto$names[[i]]
    type <- proto$types[[i]]
    lv <- proto$levels[[i]]
    x <- column(v)
    if (type == "factor") {
      codes <- (seq_len(n) - 1L) %% length(lv) + 1L
      cols[[i]] <- codes
      frame[[v]] <- factor(lv[codes], levels = lv, ordered = isTRUE(proto$ordered[[i]]))
    } else if (type == "character") {
      vals <- if (length(lv)) lv[(seq_len(n) - 1L) %% length(lv) + 1L]
              else rep_len(if (is.character(x) && length(x)) unique(x) else "a", n)
      cols[[i]] <- frame[[v]] <- vals
    } else if (type == "logical") {
      cols[[i]] <- frame[[v]] <- rep_len(c(FALSE, TRUE), n)
    } else if (type == "integer") {
      cols[[i]] <- frame[[v]] <- as.integer(if (is.numeric(x)) pick(x) %||% seq_len(n) else seq_len(n))
    } else {
      cols[[i]] <- frame[[v]] <- as.double(if (is.numeric(x)) pick(x) %||% spread else spread)
    }
  }
  list(cols = cols, frame = as.data.frame(frame, stringsAsFactors = FALSE, optional = TRUE), n = n)
}

# Differences beyond 1e-9 relative (absolute below 1e-6) count; NA against
# NA is agreement.
rl_worst <- function(got, want) {
  got <- as.double(got)
  want <- as.double(want)
  if (length(got) != length(want)) return(Inf)
  na <- is.na(got) | is.na(want)
  if (any(is.na(got) != is.na(want))) return(Inf)
  if (all(na)) return(0)
  max(abs(got[!na] - want[!na]) / pmax(abs(want[!na]), 1e-6))
}

# Score the probe rows through the served path (the scorer Python calls) and
# through R's own predict (the table's reference), and refuse the model if
# any number differs by more than 1e-9 relative or a class differs. Returns
# what /metadata reports.
rl_check <- function(fit, proto, out, scorer) {
  if (!all(proto$types %in% c("numeric", "integer", "logical", "factor", "character"))) {
    return(list(rows = 0L, max_rel_diff = NA_real_, classes_compared = 0L, reference = out$call, passed = FALSE))
  }
  probe <- rl_probe(fit, proto)
  n <- probe$n
  got <- tryCatch(scorer(probe$cols, n), error = function(e) {
    rl_refuse("R cannot predict with this model: ", conditionMessage(e))
  })
  want <- tryCatch(out$reference(probe$frame), error = function(e) {
    rl_refuse("R's own predict fails on rows built from the model's prototype: ", conditionMessage(e))
  })
  k <- length(out$classes)
  width <- if (out$kind == "multiclass") k + 1L else 1L
  if (!is.double(got) || length(got) != n * width) {
    rl_refuse("[unsupported] the model's predict returned ", paste(class(got), collapse = "/"), " of length ",
              length(got), " for ", n, " rows, not ", n * width, " number(s) (", out$kind, ")")
  }
  mismatch <- function(what) {
    rl_refuse("[unsupported] the served answer differs from what ", out$call, " gives (", what,
              "); the model is refused rather than answered wrongly")
  }
  worst <- 0
  classes_compared <- 0L
  if (out$kind == "regression") {
    worst <- rl_worst(got, want$value)
  } else if (out$kind == "label") {
    clear <- if (is.null(want$tied)) seq_len(n) else which(!want$tied)
    r_class <- as.double(match(as.character(want$class), out$classes))
    if (!identical(as.double(got)[clear], r_class[clear])) mismatch("a class")
    classes_compared <- length(clear)
  } else {
    prob <- want$prob
    # R's natural shape for two classes may be P(second class) alone (multinom)
    if (is.null(dim(prob)) && k == 2L && length(prob) == n) prob <- unname(cbind(1 - prob, prob))
    prob <- as.matrix(prob)
    if (!is.null(colnames(prob))) {
      if (!all(out$classes %in% colnames(prob))) mismatch("the classes")
      prob <- prob[, out$classes, drop = FALSE]
    }
    if (ncol(prob) != k) mismatch("the number of classes")
    served <- if (out$kind == "binary") got else matrix(got, nrow = n)[, seq_len(k), drop = FALSE]
    worst <- if (out$kind == "binary") rl_worst(served, prob[, 2L]) else rl_worst(served, prob)
    if (!is.null(want$class)) {
      # R breaks a tie between the largest probabilities at random: rows
      # with a tie are not compared.
      top <- t(apply(prob, 1L, function(p) sort(p, decreasing = TRUE)[1:2]))
      clear <- which(top[, 1L] - top[, 2L] > 1e-9)
      r_class <- match(as.character(want$class), out$classes)
      mine <- if (out$kind == "binary") ifelse(got > 0.5, 2L, 1L) else matrix(got, nrow = n)[, k + 1L]
      if (!identical(as.double(mine[clear]), as.double(r_class[clear]))) mismatch("a class")
      classes_compared <- length(clear)
    }
  }
  if (!is.finite(worst) || worst > 1e-9) mismatch(sprintf("relative difference %.3g", worst))
  list(rows = n, max_rel_diff = worst, classes_compared = classes_compared, reference = out$call,
       passed = TRUE)
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
# The model's packages are loaded first; a class outside the table is
# refused; then the served path is checked against R's own predict, so a
# model that would be answered differently from R is refused at load.
rl_load <- function(path, check = TRUE) {
  fit <- rl_read(path)
  pkgs <- rl_packages(fit)
  rl_require(pkgs)
  inner <- if (inherits(fit, "rlambda_bundle")) fit$model else fit
  rl_entry(fit)
  if (inherits(fit, "rlambda_bundle") && !is.function(fit$predict)) rl_entry(inner)
  proto <- if (inherits(fit, "rlambda_bundle")) rl_proto_frame(fit$ptype, fit$levels %||% list())
           else rl_proto_of(fit)
  nolevels <- proto$names[proto$types == "factor" & lengths(proto$levels) == 0L]
  if (length(nolevels)) {
    rl_refuse("this ", class(inner)[[1L]], " model does not record the levels of factor predictor(s) ",
              paste(nolevels, collapse = ", "), "; save it with rlambda_bundle(model, data) from models/bundle.R")
  }
  out <- rl_outputs(fit)
  scorer <- rl_scorer_of(proto, out)
  checked <- if (isTRUE(check)) rl_check(fit, proto, out, scorer)
             else list(rows = 0L, max_rel_diff = NA_real_, classes_compared = 0L, reference = out$call, passed = FALSE)
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
      levels = proto$levels,
      served_by = out$entry,
      check = checked
    ),
    scorer = scorer,
    # explain.R (evaluated beside this file): example row, ranges, intervals.
    explain = if (exists("rl_explain", mode = "function")) rl_explain(fit, proto)
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

rl_version <- function() {
  paste(R.version$major, R.version$minor, sep = ".")
}
