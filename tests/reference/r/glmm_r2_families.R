# Reference for Nakagawa's R2 / ICC of negative binomial and Gamma GLMMs
# (tests/inference/test_r2_families.py): performance 0.10.2 r2_nakagawa() / icc()
# and insight 0.19.0 get_variance() on glmmTMB fits (nbinom2; Gamma with the
# inverse and log links), plus what the same calls give for glmer.nb / glmer fits.
# R 4.2.2, glmmTMB 1.1.5, lme4 1.1-31.  Run from the project root:
#   Rscript tests/reference/r/glmm_r2_families.R > tests/reference/glmm_r2_families.json
#
# insight's distribution-specific variance (insight:::.compute_variance_distribution):
# * nbinom2 (log link): log1p(V(mu) / mu^2) with V(mu) = mu (1 + mu / theta),
#   theta = sigma(m) (the NB shape of the model) and mu = exp(b0), b0 the intercept
#   of the null model (insight::null_model: fixed part 1, the same random terms,
#   refitted with its own shape);  so log1p(1 / mu + 1 / theta);
# * Gamma (inverse, identity, log): family(m)$variance(sigma(m)) = sigma(m)^2, with
#   glmmTMB's sigma(m) = sqrt(phi) (1 / sqrt(shape)), no null model.
suppressMessages({library(lme4); library(glmmTMB); library(performance); library(insight)
                  library(jsonlite)})
DIR <- "tests/data/glmm"
sim <- read.csv(file.path(DIR, "families_sim.csv"), stringsAsFactors = TRUE)
grouse <- read.csv(file.path(DIR, "grouseticks.csv"), stringsAsFactors = TRUE)
grouse$BROOD <- factor(grouse$BROOD); grouse$LOCATION <- factor(grouse$LOCATION)
ps <- read.csv(file.path(DIR, "battery_pos.csv"), stringsAsFactors = TRUE)

quiet <- function(expr) suppressWarnings(suppressMessages(expr))
rec <- function(m) {
  v <- quiet(get_variance(m))
  r2 <- quiet(r2_nakagawa(m)); ic <- quiet(icc(m))
  nm <- quiet(null_model(m))
  b0 <- unname(if (inherits(nm, "glmmTMB")) fixef(nm)$cond[1] else fixef(nm)[1])
  list(var_fixed = v$var.fixed, var_random = v$var.random, var_residual = v$var.residual,
       var_distribution = v$var.distribution, var_dispersion = v$var.dispersion,
       R2_marginal = unname(r2$R2_marginal), R2_conditional = unname(r2$R2_conditional),
       ICC_adjusted = ic$ICC_adjusted, ICC_unadjusted = ic$ICC_unadjusted,
       null_intercept = b0, sigma = sigma(m),
       minus_2_loglik = -2 * as.numeric(logLik(m)),
       fixed = unname(if (inherits(m, "glmmTMB")) fixef(m)$cond else fixef(m)))
}
cases <- list()
add <- function(name, file, formula_py, family_py, link, tmb, other = NULL, note = "") {
  cases[[name]] <<- list(case = name, dataset_file = file, formula = formula_py,
                         family = family_py, link = link, note = note,
                         glmmTMB = rec(tmb), other = if (is.null(other)) NULL else rec(other))
}
f1 <- y_nb ~ x + (1 | g)
add("sim_nb", "families_sim.csv", "y_nb ~ x + (1|g)", "negative_binomial", "log",
    glmmTMB(f1, sim, family = nbinom2), quiet(glmer.nb(f1, sim)),
    "other = glmer.nb: insight's merMod branch, mu (1 + mu / getME(m, 'glmer.nb.theta')): the same formula")
f2 <- TICKS ~ YEAR + HEIGHT_c + (1 | BROOD) + (1 | LOCATION)
add("grouseticks_nb", "grouseticks.csv", "TICKS ~ YEAR + HEIGHT_c + (1|BROOD) + (1|LOCATION)",
    "negative_binomial", "log", glmmTMB(f2, grouse, family = nbinom2))
f3 <- y_ginv ~ x + (1 | g)
add("gamma_inverse", "families_sim.csv", "y_ginv ~ x + (1|g)", "Gamma", "inverse",
    glmmTMB(f3, sim, family = Gamma("inverse")),
    quiet(glmer(f3, sim, family = Gamma("inverse"))),
    "other = glmer: sigma(m) is glmer's dispersion estimate, not the ML one")
f4 <- y_glog ~ x + (x | g)
add("gamma_log_slope", "battery_pos.csv", "y_glog ~ x + (x|g)", "Gamma", "log",
    glmmTMB(f4, ps, family = Gamma("log")),
    note = "glmmTMB: observed-information Laplace (ma.glmm(..., information = 'observed'))")
out <- list(r_version = R.version.string, performance = as.character(packageVersion("performance")),
            insight = as.character(packageVersion("insight")),
            glmmTMB = as.character(packageVersion("glmmTMB")), cases = cases)
cat(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, null = "null", na = "null"))
