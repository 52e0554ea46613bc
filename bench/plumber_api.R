# The baseline for bench/bench_http.py: the same model served the usual way in
# R, with plumber. POST /predict takes the same JSON body as rlambda
# ({"gre": 800, "gpa": 4, "rank": 1}) and answers with the same fields, scored
# by predict(type = "response").
#
#   Rscript bench/plumber_api.R <model.rds> <port>

library(plumber)

args <- commandArgs(trailingOnly = TRUE)
model_path <- if (length(args) >= 1) args[[1]] else "models/admission.rds"
port <- if (length(args) >= 2) as.integer(args[[2]]) else 8000L

fit <- readRDS(model_path)
rank_levels <- fit$xlevels$rank

score <- function(req, res) {
  body <- jsonlite::fromJSON(req$postBody)
  newdata <- data.frame(
    gre = as.numeric(body$gre),
    gpa = as.numeric(body$gpa),
    rank = factor(as.character(body$rank), levels = rank_levels)
  )
  p <- as.numeric(predict(fit, newdata = newdata, type = "response"))
  list(result = p > 0.5, probability = p)
}

pr() |>
  pr_post("/predict", score, serializer = serializer_unboxed_json()) |>
  pr_get("/ping", function() list(status = "ok"), serializer = serializer_unboxed_json()) |>
  pr_run(host = "127.0.0.1", port = port, docs = FALSE, quiet = TRUE)
