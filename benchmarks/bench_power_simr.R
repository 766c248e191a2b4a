# R peer of bench_power_simr.py: lme4 + lmerTest on the same design, one fit at a time
# (what simr's powerCurve does per simulation).  Times lmer(REML) + summary()
# (Satterthwaite t test of cond) on a few simulated data sets at three subject
# counts and extrapolates to 1,000 simulations at each of the 10 breaks.
#   Rscript benchmarks/bench_power_simr.R [fits per size]
suppressMessages({library(lme4); library(lmerTest); library(MASS)})
args <- commandArgs(trailingOnly = TRUE)
per <- if (length(args)) as.integer(args[1]) else 5
set.seed(1)
sim <- function(ns, ni = 20) {
  d <- expand.grid(item = seq_len(ni), subj = seq_len(ns))
  d$cond <- ifelse((d$subj - 1 + d$item - 1) %% 2 == 0, -0.5, 0.5)
  us <- mvrnorm(ns, c(0, 0), matrix(c(0.3, 0.035, 0.035, 0.1), 2))
  ui <- mvrnorm(ni, c(0, 0), matrix(c(0.2, 0, 0, 0.05), 2))
  d$y <- 0.25 * d$cond + us[d$subj, 1] + us[d$subj, 2] * d$cond +
    ui[d$item, 1] + ui[d$item, 2] * d$cond + rnorm(nrow(d))
  d$subj <- factor(d$subj); d$item <- factor(d$item)
  d
}
sizes <- c(10, 50, 100)
per_fit <- sapply(sizes, function(ns) {
  ds <- lapply(seq_len(per), function(i) sim(ns))
  t <- system.time(for (d in ds) {
    m <- suppressMessages(suppressWarnings(
      lmer(y ~ cond + (1 + cond | subj) + (1 + cond | item), d)))
    s <- summary(m)$coefficients
  })[["elapsed"]]
  t / per
})
est <- 1000 * sum(approx(sizes, per_fit, xout = seq(10, 100, 10))$y)
cat(sprintf("R peer (lme4 %s, lmerTest %s): seconds per fit at %s subjects: %s; ",
            packageVersion("lme4"), packageVersion("lmerTest"),
            paste(sizes, collapse = "/"), paste(sprintf("%.3f", per_fit), collapse = "/")))
cat(sprintf("10 breaks x 1000 simulations one at a time: about %.0f s (%.1f h)\n", est, est / 3600))
