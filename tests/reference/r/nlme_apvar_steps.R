# How the fixture tests/reference/nlme_apvar_steps.json was made (run once by hand;
# nothing in mixedanova or its tests needs R).
#
# nlme's intervals() for corStruct / varStruct parameters are Wald intervals on the
# unconstrained scale, u +- z se(u), with se(u) from m$apVar: the inverse of a Hessian
# of the log-likelihood that fdHess() takes by finite differences with relative step
# lmeControl(.relStep) = .Machine$double.eps^(1/3) (6.1e-6).  At that step rounding in
# the log-likelihood moves the second differences by parts in 1e3, so the intervals in
# ../shared/reference differ from the same call on another BLAS/R build by that much.
# This script refits each reference model at larger steps (where rounding is
# negligible) and records se(u); fdHess's mixed differences are one-sided (error
# O(h)), so the step-free value is the linear extrapolation 2 S(h) - S(2h).
#
#   Rscript tests/reference/r/nlme_apvar_steps.R /path/to/shared/data out.json
library(nlme)
library(jsonlite)
args <- commandArgs(trailingOnly = TRUE)
data_dir <- args[1]
rd <- function(f) {
  d <- read.csv(file.path(data_dir, f))
  for (n in names(d)) if (is.character(d[[n]])) d[[n]] <- factor(d[[n]])
  d
}
steps <- c(5e-5, 1e-4, 2e-4, 4e-4)
cases <- list(
  ovary_ar1 = list("ovary.csv", function(d, ctl) lme(follicles ~ sin2pit + cos2pit,
    random = ~ 1 | Mare, correlation = corAR1(form = ~ 1 | Mare), data = d,
    method = "REML", control = ctl)),
  ergostool_varident = list("ergostool.csv", function(d, ctl) lme(effort ~ Type,
    random = ~ 1 | Subject, weights = varIdent(form = ~ 1 | Type), data = d,
    method = "REML", control = ctl)),
  pixel_compsymm = list("pixel.csv", function(d, ctl) lme(pixel ~ day + day2,
    random = ~ 1 | Dog, correlation = corCompSymm(form = ~ 1 | Dog/Side), data = d,
    method = "REML", control = ctl)),
  trial_ar1_varident = list("trial_visits.csv", function(d, ctl) lme(y ~ visit * arm,
    random = ~ 1 | patient, correlation = corAR1(form = ~ visit | patient),
    weights = varIdent(form = ~ 1 | arm), data = d, method = "REML", control = ctl)),
  irregular_car1 = list("irregular_visits.csv", function(d, ctl) lme(y ~ time + group,
    random = ~ 1 | patient, correlation = corCAR1(form = ~ time | patient), data = d,
    method = "REML", control = ctl)),
  dialyzer_varpower_reml = list("dialyzer.csv", function(d, ctl) lme(
    rate ~ (pressure + pressure2) * QB, random = ~ 1 | Subject,
    weights = varPower(form = ~ pressure), data = d, method = "REML", control = ctl)),
  dialyzer_varpower_ml = list("dialyzer.csv", function(d, ctl) lme(
    rate ~ (pressure + pressure2) * QB, random = ~ 1 | Subject,
    weights = varPower(form = ~ pressure), data = d, method = "ML", control = ctl)),
  doseresp_varexp = list("dose_response.csv", function(d, ctl) lme(y ~ dose,
    random = ~ 1 | subject, weights = varExp(form = ~ dose), data = d,
    method = "REML", control = ctl)),
  glucose_ar1 = list("glucose.csv", function(d, ctl) lme(y ~ 0 + food:time,
    random = ~ 1 | day, correlation = corAR1(form = ~ tindex | day/subject), data = d,
    method = "REML", control = ctl))
)
se_struct <- function(m) {
  a <- m$apVar
  keep <- grepl("^(corStruct|varStruct)", colnames(a))
  setNames(as.list(sqrt(diag(a))[keep]), colnames(a)[keep])
}
out <- list(r_version = R.version.string,
            nlme_version = as.character(packageVersion("nlme")),
            steps = steps, cases = list())
for (name in names(cases)) {
  d <- rd(cases[[name]][[1]])
  fit <- cases[[name]][[2]]
  m0 <- fit(d, lmeControl())
  iv <- intervals(m0, which = "var-cov")
  se <- lapply(steps, function(h) se_struct(fit(d, lmeControl(.relStep = h))))
  names(se) <- format(steps)
  keys <- names(se[[1]])
  ext <- lapply(keys, function(k) sapply(1:3, function(i) 2 * se[[i]][[k]] - se[[i + 1]][[k]]))
  names(ext) <- keys
  out$cases[[name]] <- list(
    default_step_se = se_struct(m0),
    default_step_intervals = list(corStruct = iv$corStruct, varStruct = iv$varStruct),
    se_by_step = se,
    extrapolated_se = ext)
  cat(name, "\n"); str(ext)
}
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), args[2])
