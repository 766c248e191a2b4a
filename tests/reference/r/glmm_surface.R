# Reference for tests/results/test_glmm_inference.py (issue 18, the results surface of
# GLMMs): likelihood-ratio tests, Wald and profile intervals, emmeans on the link and
# response scales with pairs(), performance's R2 and ICC, predictions and residuals,
# for lme4::glmer fits to cbpp (binomial, logit) and grouseticks (Poisson, log).
# R 4.2.2, lme4 1.1-31, emmeans, performance / insight (versions written to the JSON).
# Run from the project root:
#   Rscript tests/reference/r/glmm_surface.R > tests/reference/glmm_surface.json
suppressMessages({library(lme4); library(emmeans); library(performance)})
tight <- glmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5))

frame <- function(x) {
  x <- as.data.frame(x)
  for (k in names(x)) if (is.factor(x[[k]])) x[[k]] <- as.character(x[[k]])
  as.list(x)
}

surface <- function(m, m0, emm_spec, nd, profile_which = NULL) {
  out <- list()
  out$fixef <- as.list(fixef(m))
  out$theta <- unname(getME(m, "theta"))
  out$minus_2_loglik <- -2 * as.numeric(logLik(m))
  a <- anova(m0, m)
  out$anova <- list(r_call = "anova(m0, m)", npar = a$npar, AIC = a$AIC, BIC = a$BIC,
                    logLik = a$logLik, deviance = a$deviance, Chisq = a$Chisq,
                    Df = a$Df, p = a[["Pr(>Chisq)"]])
  w <- confint(m, method = "Wald")
  out$confint_wald <- list(r_call = "confint(m, method = 'Wald')", parameters = rownames(w),
                           lower = unname(w[, 1]), upper = unname(w[, 2]))
  e_link <- summary(emmeans(m, emm_spec), infer = TRUE)
  e_resp <- summary(emmeans(m, emm_spec, type = "response"), infer = TRUE)
  pr_link <- summary(pairs(emmeans(m, emm_spec)), infer = TRUE)
  pr_resp <- summary(pairs(emmeans(m, emm_spec, type = "response")), infer = TRUE)
  out$emmeans <- list(r_call = sprintf("summary(emmeans(m, '%s'), infer = TRUE)", emm_spec),
                      link = frame(e_link), response = frame(e_resp),
                      response_r_call = sprintf(
                        "summary(emmeans(m, '%s', type = 'response'), infer = TRUE)", emm_spec),
                      pairs_link = frame(pr_link), pairs_response = frame(pr_resp),
                      pairs_r_call = "summary(pairs(emm), infer = TRUE) (tukey)")
  r2 <- suppressWarnings(r2_nakagawa(m))
  ic <- suppressWarnings(icc(m))
  vv <- suppressWarnings(insight::get_variance(m))
  out$r2_icc <- list(r_call = "performance::r2_nakagawa(m); performance::icc(m); insight::get_variance(m)",
                     R2_marginal = unname(r2$R2_marginal),
                     R2_conditional = unname(r2$R2_conditional),
                     ICC_adjusted = ic$ICC_adjusted, ICC_unadjusted = ic$ICC_unadjusted,
                     var_fixed = vv$var.fixed, var_random = vv$var.random,
                     var_residual = vv$var.residual, var_distribution = vv$var.distribution,
                     var_dispersion = vv$var.dispersion)
  out$predict <- list(
    newdata = frame(nd),
    population_response = unname(predict(m, newdata = nd, re.form = NA, type = "response")),
    population_link = unname(predict(m, newdata = nd, re.form = NA, type = "link")),
    conditional_response = unname(predict(m, newdata = nd, re.form = NULL,
                                          allow.new.levels = TRUE, type = "response")),
    r_call = "predict(m, newdata = nd, re.form = NA / NULL, allow.new.levels = TRUE, type = ...)")
  out$residuals <- list(
    deviance = unname(residuals(m, type = "deviance")),
    pearson = unname(residuals(m, type = "pearson")),
    response = unname(residuals(m, type = "response")),
    working = unname(residuals(m, type = "working")),
    r_call = "residuals(m, type = ...)")
  out$fitted <- unname(fitted(m))
  # the profile last: profile() moves the fit's reference-class state (pp, resp),
  # after which predict() and residuals() of m are no longer those of the fit
  # the profile: default spacing (confint(m, method = 'profile')) and a fine one
  # (delta.cutoff = 1/64, bobyqa rhoend 1e-10) to show the spline's precision
  t0 <- proc.time()[["elapsed"]]
  p8 <- confint(profile(m, which = profile_which), level = 0.95)
  p64 <- confint(profile(m, which = profile_which, delta.cutoff = 1 / 64,
                         control = list(rhoend = 1e-10)), level = 0.95)
  out$confint_profile <- list(
    r_call = "confint(profile(m, delta.cutoff = 1/64, control = list(rhoend = 1e-10)))",
    parameters = rownames(p64), lower = unname(p64[, 1]), upper = unname(p64[, 2]),
    default_r_call = "confint(m, method = 'profile')",
    default_lower = unname(p8[, 1]), default_upper = unname(p8[, 2]),
    seconds = proc.time()[["elapsed"]] - t0)
  out
}

cbpp <- read.csv("tests/data/glmm/cbpp.csv", stringsAsFactors = TRUE)
cbpp$herd <- factor(cbpp$herd)
c1 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial,
            control = tight)
c0 <- glmer(cbind(incidence, size - incidence) ~ 1 + (1 | herd), cbpp, binomial,
            control = tight)
ndc <- data.frame(herd = c("1", "3", "15", "99"), period = c("P1", "P4", "P2", "P3"))
res_cbpp <- surface(c1, c0, "period", ndc)
res_cbpp$formula <- "cbind(incidence, size - incidence) ~ period + (1|herd)"
res_cbpp$formula0 <- "cbind(incidence, size - incidence) ~ 1 + (1|herd)"
# quadrature fits: lme4's nAGQ > 1 logLik leaves out the saturated log-likelihood
# (sum of dbinom(incidence, size, incidence / size, log = TRUE)); added back here
c1q <- update(c1, nAGQ = 9)
c0q <- update(c0, nAGQ = 9)
sat <- sum(dbinom(cbpp$incidence, cbpp$size, cbpp$incidence / cbpp$size, log = TRUE))
aq <- anova(c0q, c1q)
res_cbpp$agq9 <- list(r_call = "anova(update(m0, nAGQ = 9), update(m, nAGQ = 9))",
                      saturated_loglik = sat, logLik_lme4 = aq$logLik,
                      logLik = aq$logLik + sat, Chisq = aq$Chisq, Df = aq$Df,
                      p = aq[["Pr(>Chisq)"]], npar = aq$npar,
                      note = "logLik = lme4's nAGQ = 9 logLik + saturated_loglik; Chisq is unaffected")
message("cbpp done ", proc.time()[["elapsed"]])

gt <- read.csv("tests/data/glmm/grouseticks.csv", stringsAsFactors = TRUE)
for (k in c("INDEX", "BROOD", "LOCATION")) gt[[k]] <- factor(gt[[k]])
g1 <- glmer(TICKS ~ YEAR + HEIGHT_c + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), gt,
            poisson, control = tight)
g0 <- glmer(TICKS ~ YEAR + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), gt, poisson,
            control = tight)
ndg <- data.frame(INDEX = c("1", "9999"), BROOD = c("501", "9999"),
                  LOCATION = c("32", "9999"), YEAR = c("Y95", "Y97"),
                  HEIGHT_c = c(0.0767400978384323, 1))
res_gt <- surface(g1, g0, "YEAR", ndg)
res_gt$formula <- "TICKS ~ YEAR + HEIGHT_c + (1|BROOD) + (1|INDEX) + (1|LOCATION)"
res_gt$formula0 <- "TICKS ~ YEAR + (1|BROOD) + (1|INDEX) + (1|LOCATION)"

out <- list(case = "glmm_surface", r_version = R.version.string,
            lme4 = as.character(packageVersion("lme4")),
            emmeans = as.character(packageVersion("emmeans")),
            performance = as.character(packageVersion("performance")),
            insight = as.character(packageVersion("insight")),
            control = "glmerControl(optimizer = 'bobyqa', optCtrl = list(rhoend = 1e-10, maxfun = 1e5))",
            cbpp = res_cbpp, grouseticks = res_gt)
cat(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null"))
