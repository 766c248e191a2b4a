# Reference for tests/results/test_glmm_inference.py (issue 18): the GLMM results
# surface from glmmTMB fits of the models of glmm_surface.R.  glmmTMB's Laplace
# value is exact (automatic differentiation, inner optimization to convergence)
# and its vcov() is the inverse Hessian of the exact objective, where glmer's
# estimates and SEs are off the exact Laplace optimum (cbpp: SEs by ~1%;
# GLMM_README.md of the shared references).  The fits are made at top level so
# that insight::null_model() (behind the Poisson R2) can refit them.
# R 4.2.2, glmmTMB, emmeans, performance / insight (versions written to the JSON).
# Run from the project root:
#   Rscript tests/reference/r/glmm_surface_tmb.R > tests/reference/glmm_surface_tmb.json
suppressMessages({library(glmmTMB); library(emmeans); library(performance)})

frame <- function(x) {
  x <- as.data.frame(x)
  for (k in names(x)) if (is.factor(x[[k]])) x[[k]] <- as.character(x[[k]])
  as.list(x)
}

# emmeans gives a glmmTMB fit df.residual(m) by default; df = Inf is the
# asymptotic (z) inference it uses for glmer fits
surface <- function(m, emm_spec, nd) {
  e_link <- summary(emmeans(m, emm_spec, df = Inf), infer = TRUE)
  e_resp <- summary(emmeans(m, emm_spec, type = "response", df = Inf), infer = TRUE)
  pr_link <- summary(pairs(emmeans(m, emm_spec, df = Inf)), infer = TRUE)
  pr_resp <- summary(pairs(emmeans(m, emm_spec, type = "response", df = Inf)), infer = TRUE)
  r2 <- suppressWarnings(r2_nakagawa(m))
  ic <- suppressWarnings(icc(m))
  vv <- suppressWarnings(insight::get_variance(m))
  list(fixef = unname(fixef(m)$cond), se = unname(sqrt(diag(vcov(m)$cond))),
       minus_2_loglik = -2 * as.numeric(logLik(m)),
       emmeans = list(link = frame(e_link), response = frame(e_resp),
                      pairs_link = frame(pr_link), pairs_response = frame(pr_resp),
                      r_call = "summary(emmeans(m, spec[, type = 'response'], df = Inf), infer = TRUE); pairs()"),
       r2_icc = list(r_call = "performance::r2_nakagawa(m); icc(m); insight::get_variance(m)",
                     R2_marginal = unname(r2$R2_marginal),
                     R2_conditional = unname(r2$R2_conditional),
                     ICC_adjusted = ic$ICC_adjusted, ICC_unadjusted = ic$ICC_unadjusted,
                     var_fixed = vv$var.fixed, var_random = vv$var.random,
                     var_residual = vv$var.residual, var_distribution = vv$var.distribution,
                     var_dispersion = vv$var.dispersion),
       population_response = unname(predict(m, newdata = nd, re.form = NA,
                                            type = "response", allow.new.levels = TRUE)))
}

cbpp <- read.csv("tests/data/glmm/cbpp.csv", stringsAsFactors = TRUE)
cbpp$herd <- factor(cbpp$herd)
mc <- glmmTMB(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp,
              family = binomial)
ndc <- data.frame(herd = c("1", "3", "15", "99"), period = c("P1", "P4", "P2", "P3"))

gt <- read.csv("tests/data/glmm/grouseticks.csv", stringsAsFactors = TRUE)
for (k in c("INDEX", "BROOD", "LOCATION")) gt[[k]] <- factor(gt[[k]])
mg <- glmmTMB(TICKS ~ YEAR + HEIGHT_c + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION),
              data = gt, family = poisson)
ndg <- data.frame(INDEX = c("1", "9999"), BROOD = c("501", "9999"),
                  LOCATION = c("32", "9999"), YEAR = c("Y95", "Y97"),
                  HEIGHT_c = c(0.0767400978384323, 1))
null_g <- insight::null_model(mg)

out <- list(case = "glmm_surface_tmb", r_version = R.version.string,
            glmmTMB = as.character(packageVersion("glmmTMB")),
            emmeans = as.character(packageVersion("emmeans")),
            performance = as.character(packageVersion("performance")),
            insight = as.character(packageVersion("insight")),
            r_call = "glmmTMB(formula, data, family)",
            cbpp = surface(mc, "period", ndc),
            grouseticks = c(surface(mg, "YEAR", ndg),
                            list(null_model_intercept = unname(fixef(null_g)$cond))))
cat(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null"))
