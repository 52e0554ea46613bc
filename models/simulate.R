#!/usr/bin/env Rscript
# A seeded, simulated stand-in for the UCLA graduate-admission data
# (binary.csv: admit, gre, gpa, rank; 400 rows), which may not be committed.
# It matches the published summary (rank counts 61/151/121/67, gre 220-800
# with mean about 588, gpa 2.26-4.00 with mean about 3.39) and draws `admit`
# from the published logit, so a model fitted on it looks like the original.
#
#   Rscript models/simulate.R [--out admission-sim.csv] [--seed 2017]
# When sourced, it only defines simulate_admission().

simulate_admission <- function(seed = 2017L) {
  set.seed(seed)
  rank <- sample(rep(1:4, times = c(61L, 151L, 121L, 67L)))
  n <- length(rank)
  # GRE is reported in steps of 10 on the old scale; the data use steps of 20.
  gre <- pmin(800, pmax(220, round(rnorm(n, 582, 113) / 20) * 20))
  gpa <- pmin(4, pmax(2.26, round(rnorm(n, 3.39, 0.375), 2)))
  # pin the published extremes so the ranges match exactly
  gre[c(1L, 2L)] <- c(220, 800)
  gpa[c(3L, 4L)] <- c(2.26, 4.00)
  eta <- -3.989979 + 0.002264 * gre + 0.804038 * gpa +
    c(0, -0.675443, -1.340204, -1.551464)[rank]
  admit <- rbinom(n, 1L, plogis(eta))
  data.frame(admit = admit, gre = gre, gpa = gpa, rank = rank)
}

if (sys.nframe() == 0L) {
  args <- commandArgs(trailingOnly = TRUE)
  opt <- function(name, default) {
    i <- match(name, args)
    if (is.na(i) || i == length(args)) default else args[[i + 1L]]
  }
  out <- opt("--out", "admission-sim.csv")
  d <- simulate_admission(as.integer(opt("--seed", "2017")))
  tmp <- paste0(out, ".tmp")
  write.csv(d, tmp, row.names = FALSE)
  if (!file.rename(tmp, out)) stop("cannot write ", out)
  message(sprintf("simulate.R: wrote %d rows to %s (admit rate %.3f)", nrow(d), out, mean(d$admit)))
}
