# Reference for tests/likelihood/test_residual_held.py (issue 21): nlme::lme with the
# AR(1) residual correlation held at phi = 0.5 (corAR1(0.5, fixed = TRUE)), on the
# bundled datasets/ovary.csv (nlme::Ovary with sin2pit = sin(2*pi*Time), cos2pit =
# cos(2*pi*Time), time_index = 1, 2, ... within Mare); the AR(1) runs over the rows of
# a Mare in time_index order.  R 4.2.2, nlme.  Run from the project root:
#   Rscript tests/reference/r/ovary_ar1_fixed.R > tests/reference/ovary_ar1_fixed.json
suppressMessages(library(nlme))
d <- read.csv("datasets/ovary.csv")
d$Mare <- factor(d$Mare)
d <- d[order(d$Mare, d$time_index), ]
fit <- function(cor, method) lme(follicles ~ sin2pit + cos2pit, data = d, random = ~ 1 | Mare,
                                 correlation = cor, method = method)
one <- function(m) {
  tt <- summary(m)$tTable
  list(loglik = as.numeric(logLik(m)), npar = attr(logLik(m), "df"), aic = AIC(m),
       sigma = m$sigma, random_effect_sd = sqrt(as.numeric(getVarCov(m))),
       phi = unname(coef(m$modelStruct$corStruct, unconstrained = FALSE)),
       fixed = list(names = rownames(tt), estimate = unname(tt[, "Value"]),
                    se = unname(tt[, "Std.Error"])))
}
out <- list(
  case = "ovary_ar1_fixed", r_version = R.version.string,
  nlme = as.character(packageVersion("nlme")),
  formula = "follicles ~ sin2pit + cos2pit + (1|Mare)",
  formula_r = paste("nlme::lme(follicles ~ sin2pit + cos2pit, random = ~ 1 | Mare,",
                    "correlation = corAR1(0.5, form = ~ 1 | Mare, fixed = TRUE), method = M)"),
  held_reml = one(fit(corAR1(0.5, form = ~ 1 | Mare, fixed = TRUE), "REML")),
  held_ml = one(fit(corAR1(0.5, form = ~ 1 | Mare, fixed = TRUE), "ML")),
  free_reml = one(fit(corAR1(form = ~ 1 | Mare), "REML")))
cat(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE))
