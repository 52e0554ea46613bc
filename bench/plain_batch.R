# The baseline of bench/bench_batch.py: what a data scientist writes by hand
# to score a CSV with the model (read.csv, predict(type = "response"),
# write.csv), plus the two conversions predict needs on this file (a bad
# gre cell makes the column text; rank is a factor in the model). Prints
# the seconds from readRDS to the end of write.csv as JSON, with the CPU
# seconds (user + system) of the same span.
#
#   Rscript bench/plain_batch.R model.rds input.csv output.csv
args <- commandArgs(trailingOnly = TRUE)
t0 <- proc.time()
fit <- readRDS(args[[1]])
d <- read.csv(args[[2]])
d$gre <- suppressWarnings(as.numeric(d$gre))
d$rank <- factor(d$rank, levels = fit$xlevels$rank)
d$probability <- predict(fit, newdata = d, type = "response")
d$result <- d$probability > 0.5
write.csv(d, args[[3]], row.names = FALSE)
t <- proc.time() - t0
cat(sprintf('{"seconds": %.3f, "cpu_seconds": %.3f}\n', t[["elapsed"]], t[["user.self"]] + t[["sys.self"]]))
