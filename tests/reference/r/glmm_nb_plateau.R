# NB GLMM whose Poisson start puts MASS::theta.ml at its limit (the random
# intercept absorbs the overdispersion): glmer.nb stops at shape ~137, the joint
# optimum is at ~75.  Writes tests/reference/glmm_nb_plateau.json.
# Data: simulated in R (set.seed(77); see tests/data/glmm/nb_plateau.csv).
suppressPackageStartupMessages({library(lme4); library(glmmTMB); library(jsonlite)})
d <- read.csv("tests/data/glmm/nb_plateau.csv")
nb <- glmer.nb(y ~ x + (1 | g), data = d)
tmb <- glmmTMB(y ~ x + (1 | g), d, family = nbinom2)
prof <- sapply(c(50, 75, 137), function(th) -2 * as.numeric(logLik(
  glmer(y ~ x + (1 | g), d, family = MASS::negative.binomial(th),
        control = glmerControl(tolPwrss = 1e-12)))))
out <- list(
  glmer_nb = list(m2ll = -2 * as.numeric(logLik(nb)), shape = getME(nb, "glmer.nb.theta")),
  glmmTMB = list(m2ll = -2 * as.numeric(logLik(tmb)), shape = sigma(tmb),
                 beta = unname(fixef(tmb)$cond)),
  glmer_fixed_shape = list(shape = c(50, 75, 137), m2ll = prof))
write_json(out, "tests/reference/glmm_nb_plateau.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
