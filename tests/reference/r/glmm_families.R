# Reference for tests/glmm/test_families.py (issue 18): GLMM families and links
# beyond the visible glmer files -- binomial probit / cloglog / cauchit, Poisson sqrt / identity,
# Gamma (inverse and log links), inverse Gaussian (log link), negative binomial --
# from lme4 (glmer, glmer.nb), glmmTMB and an independent dense evaluator of the
# Laplace approximation written here.  R 4.2.2, lme4 1.1-31, glmmTMB 1.1.5.
# Run from the project root:
#   Rscript tests/reference/r/glmm_families.R > tests/reference/glmm_families.json
# (it also writes the simulated data tests/data/glmm/families_sim.csv).
#
# `exact` of each case is the optimum of the Laplace approximation with
# expected-information (Fisher) working weights W = w (dmu/deta)^2 / (phi V(mu)):
#   -2 log L = -2 sum log p(y_i | mu_i, phi) + |u|^2 + log det(Lambda'Z'WZ Lambda + I)
# at the conditional modes u (Fisher scoring to convergence), binomial
# coefficients / log(y!) included, the prior weight multiplying each row's
# log-density.  For binomial and Poisson with any link and for the NB at a fixed
# shape this is glmer's objective (lme4's Laplace with expected-information
# weights); with the NB shape and the Gamma / inverse Gaussian dispersion phi as
# one more parameter, its joint optimum is the maximum-likelihood estimate of
# that parameter for this Laplace approximation (glmer.nb's profile optimum;
# glmmTMB's for the canonical links, where observed and expected information
# agree).  It is optimized by nlminb from the R fits, then Newton steps with
# numDeriv's Richardson gradient and Hessian.  SEs: lme4's vcov formula, the beta
# block of 2 H^-1 with H the Hessian of -2 log L over (theta, beta), at the
# estimated parameter held fixed (`se`, as glmer.nb's final glmer fit) and with
# log(parameter) in H too (`se_joint`, as glmmTMB).
suppressMessages({library(lme4); library(glmmTMB); library(MASS); library(numDeriv)
                  library(statmod); library(jsonlite)})

## ---------------------------------------------------------------- simulated data
set.seed(20261202)
ng <- 25; n <- 300
g <- sample(rep(seq_len(ng), length.out = n)); x <- runif(n)
u1 <- rnorm(ng, 0, 0.08); u2 <- rnorm(ng, 0, 0.4); u3 <- rnorm(ng, 0, 0.3); u4 <- rnorm(ng, 0, 0.6)
sim <- data.frame(g = sprintf("g%02d", g), x = round(x, 6))
sim$y_ginv <- signif(rgamma(n, shape = 4, scale = 1 / (0.5 + 0.4 * sim$x + u1[g]) / 4), 8)
sim$y_glog <- signif(rgamma(n, shape = 3, scale = exp(1 + 0.6 * sim$x + u2[g]) / 3), 8)
sim$y_ig <- signif(rinvgauss(n, mean = exp(0.5 + 0.4 * sim$x + u3[g]), dispersion = 0.2), 8)
mu_nb <- exp(1 + 0.8 * sim$x + u4[g])
sim$y_nb <- rnbinom(n, size = 1.5, mu = mu_nb)
u5 <- rnorm(ng, 0, 0.3); u6 <- rnorm(ng, 0, 1)
sim$y_psqrt <- rpois(n, (2 + 0.5 * sim$x + u5[g])^2)
sim$y_pid <- rpois(n, 6 + 2 * sim$x + u6[g])
write.csv(sim, "tests/data/glmm/families_sim.csv", row.names = FALSE)
sim <- read.csv("tests/data/glmm/families_sim.csv", stringsAsFactors = TRUE)
cbpp <- read.csv("tests/data/glmm/cbpp.csv", stringsAsFactors = TRUE)
cbpp$herd <- factor(cbpp$herd); cbpp$period <- factor(cbpp$period)
grouse <- read.csv("tests/data/glmm/grouseticks.csv", stringsAsFactors = TRUE)
grouse$BROOD <- factor(grouse$BROOD); grouse$LOCATION <- factor(grouse$LOCATION)

## ---------------------------------------------------------------- the evaluator
# scalar random intercepts only: groups = list of factors
make_eval <- function(fam, y, w, X, groups, kind) {
  Z <- do.call(cbind, lapply(groups, function(f) {
    M <- matrix(0, length(f), nlevels(f)); M[cbind(seq_along(f), as.integer(f))] <- 1; M }))
  nl <- sapply(groups, nlevels)
  ll <- function(mu, a) switch(kind,
    binomial = dbinom(round(w * y), round(w), mu, log = TRUE),
    poisson = w * dpois(y, mu, log = TRUE),
    nb = w * dnbinom(y, size = a, mu = mu, log = TRUE),
    gamma = w * dgamma(y, shape = 1 / a, scale = mu * a, log = TRUE),
    ig = w * dinvgauss(y, mean = mu, dispersion = a, log = TRUE))
  famof <- function(a) if (kind == "nb") negative.binomial(a, link = fam$link) else fam
  phiof <- function(a) if (kind %in% c("gamma", "ig")) a else 1
  ustore <- new.env(); ustore$u <- rep(0, ncol(Z))
  function(theta, beta, a = NA) {
    f <- famof(a); phi <- phiof(a)
    lam <- rep(theta, nl); ZL <- sweep(Z, 2, lam, "*")
    base <- drop(X %*% beta)
    state <- function(u) {
      eta <- base + drop(ZL %*% u)
      if (!all(is.finite(eta)) || !f$valideta(eta)) return(NULL)
      mu <- f$linkinv(eta)
      if (!all(is.finite(mu)) || !f$validmu(mu)) return(NULL)
      list(eta = eta, mu = mu, me = f$mu.eta(eta),
           pdev = sum(f$dev.resids(y, mu, w)) / phi + sum(u^2))
    }
    for (start in list(ustore$u, rep(0, ncol(Z)))) {
      u <- start; st <- state(u); if (is.null(st)) next
      ok <- FALSE
      for (it in 1:500) {
        W <- w * st$me^2 / (phi * f$variance(st$mu))
        z <- st$eta - base + (y - st$mu) / st$me
        A <- crossprod(ZL, W * ZL) + diag(ncol(Z))
        un <- drop(solve(A, crossprod(ZL, W * z)))
        du <- un - u
        if (max(abs(du)) < 1e-13 * (1 + max(abs(u)))) { ok <- TRUE; break }
        t <- 1; moved <- FALSE
        for (h in 1:40) {
          s2 <- state(u + t * du)
          if (!is.null(s2) && s2$pdev <= st$pdev + 1e-13 * abs(st$pdev)) { moved <- TRUE; break }
          t <- t / 2
        }
        if (!moved) { ok <- TRUE; break }
        u <- u + t * du; st <- s2
      }
      if (ok) break
    }
    if (is.null(st) || !ok) return(Inf)
    ustore$u <- u
    W <- w * st$me^2 / (phi * f$variance(st$mu))
    A <- crossprod(ZL, W * ZL) + diag(ncol(Z))
    -2 * sum(ll(st$mu, a)) + sum(u^2) + as.numeric(determinant(A, logarithm = TRUE)$modulus)
  }
}

exact_fit <- function(ev, k, p, start, has_a) {
  # par = c(theta (k), beta (p), log a)
  obj <- function(par) ev(par[1:k], par[k + 1:p], if (has_a) exp(par[k + p + 1]) else NA)
  lower <- c(rep(0, k), rep(-Inf, p + has_a))
  o <- nlminb(start, obj, lower = lower, control = list(eval.max = 5000, iter.max = 2000,
                                                          rel.tol = 1e-15, x.tol = 1e-12))
  par <- o$par; val <- obj(par); steps <- 0
  for (s in 1:20) {
    g <- grad(obj, par); H <- hessian(obj, par)
    step <- -solve(H, g); dec <- 0.5 * sum(-g * step)
    if (!is.finite(dec) || dec < 1e-13) break
    t <- 1; moved <- FALSE
    for (h in 1:30) {
      pn <- par + t * step
      if (all(pn[1:k] >= 0)) { vn <- obj(pn); if (vn < val) { moved <- TRUE; break } }
      t <- t / 2
    }
    if (!moved) break
    par <- pn; val <- vn; steps <- steps + 1
  }
  g <- grad(obj, par); H <- hessian(obj, par)
  kp <- k + p
  Hc <- H[1:kp, 1:kp, drop = FALSE]
  se <- sqrt(diag(2 * solve(Hc)))[k + 1:p]
  se_joint <- if (has_a) sqrt(diag(2 * solve(H)))[k + 1:p] else se
  list(minus_2_loglik = val, theta = par[1:k], beta = par[k + 1:p],
       param = if (has_a) exp(par[kp + 1]) else NULL, se = se, se_joint = se_joint,
       gradient = g, newton_steps = steps, nlminb_message = o$message,
       newton_decrement = 0.5 * sum(g * solve(H, g)))
}

fixed_of <- function(m) { cf <- coef(summary(m)); if (is.list(cf) && !is.matrix(cf)) cf <- cf$cond
  list(names = rownames(cf), estimate = unname(cf[, 1]), se = unname(cf[, 2])) }
glmer_rec <- function(m) {
  list(minus_2_loglik = -2 * as.numeric(logLik(m)), df = attr(logLik(m), "df"),
       aic = AIC(m), theta = unname(getME(m, "theta")), fixed = fixed_of(m),
       sigma = sigma(m), family = family(m)$family, link = family(m)$link,
       nb_shape = if (grepl("Negative Binomial", family(m)$family)) getME(m, "glmer.nb.theta") else NULL,
       messages = m@optinfo$conv$lme4$messages)
}
tmb_rec <- function(m) {
  vc <- VarCorr(m)$cond
  list(residuals_response_first20 = unname(head(residuals(m, type = "response"), 20)),
       residuals_pearson_first20 = unname(head(residuals(m, type = "pearson"), 20)),
       fitted_first20 = unname(head(fitted(m), 20)),minus_2_loglik = -2 * as.numeric(logLik(m)), df = attr(logLik(m), "df"),
       aic = AIC(m), sd = unname(sapply(vc, function(v) attr(v, "stddev"))),
       fixed = fixed_of(m), sigma = sigma(m), pdHess = m$sdr$pdHess,
       convergence = m$fit$convergence)
}
tight <- glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5), tolPwrss = 1e-12)

cases <- list()
run_case <- function(name, data_file, formula, family_py, link, kind, data, fam, groups,
                     y, w, X, glmer_fit = NULL, tmb_fit = NULL, note = "") {
  k <- length(groups); p <- ncol(X)
  has_a <- kind %in% c("nb", "gamma", "ig")
  ev <- make_eval(fam, y, w, X, groups, kind)
  # start: the best of the R fits on the evaluator
  starts <- list()
  if (!is.null(glmer_fit)) {
    a0 <- if (kind == "nb") glmer_fit$nb_shape else if (has_a) glmer_fit$sigma^2 else NULL
    starts$glmer <- c(glmer_fit$theta, glmer_fit$fixed$estimate, if (has_a) log(a0))
  }
  if (!is.null(tmb_fit)) {
    a0 <- if (kind == "nb") tmb_fit$sigma else if (has_a) tmb_fit$sigma^2 else NULL
    starts$glmmTMB <- c(tmb_fit$sd, tmb_fit$fixed$estimate, if (has_a) log(a0))
  }
  vals <- sapply(starts, function(s) ev(s[1:k], s[k + 1:p], if (has_a) exp(s[k + p + 1]) else NA))
  ex <- exact_fit(ev, k, p, starts[[which.min(vals)]], has_a)
  ex$objective_at_start <- as.list(vals)
  ex$fixed_names <- colnames(X)
  cases[[name]] <<- list(case = name, dataset_file = data_file, formula = formula,
                         family = family_py, link = link, note = note, exact = ex,
                         glmer = glmer_fit, glmmTMB = tmb_fit)
}

## ---------------------------------------------------------------- cases
fcb <- cbind(incidence, size - incidence) ~ period + (1 | herd)
Xcb <- model.matrix(~ period, cbpp)
for (lk in c("probit", "cloglog", "cauchit")) {
  m <- glmer(fcb, cbpp, family = binomial(link = lk), control = tight)
  run_case(paste0("cbpp_", lk), "cbpp.csv", "cbind(incidence, size - incidence) ~ period + (1|herd)",
           "binomial", lk, "binomial", cbpp, binomial(link = lk), list(cbpp$herd),
           cbpp$incidence / cbpp$size, cbpp$size, Xcb, glmer_rec(m))
}

Xg <- model.matrix(~ YEAR + HEIGHT_c, grouse)
Xs <- model.matrix(~ x, sim)
one <- rep(1, nrow(sim))
# Gamma, canonical inverse link: glmmTMB's Laplace (observed information = expected)
mt <- glmmTMB(y_ginv ~ x + (1 | g), sim, family = Gamma(link = "inverse"))
mg <- glmer(y_ginv ~ x + (1 | g), sim, family = Gamma(link = "inverse"), control = tight)
run_case("gamma_inverse", "families_sim.csv", "y_ginv ~ x + (1|g)", "Gamma", "inverse", "gamma",
         sim, Gamma(link = "inverse"), list(sim$g), sim$y_ginv, one, Xs, glmer_rec(mg), tmb_rec(mt),
         "canonical link: exact = glmmTMB's Laplace; glmer's differs (its dispersion)")
mt <- glmmTMB(y_glog ~ x + (1 | g), sim, family = Gamma(link = "log"))
mg <- glmer(y_glog ~ x + (1 | g), sim, family = Gamma(link = "log"), control = tight)
run_case("gamma_log", "families_sim.csv", "y_glog ~ x + (1|g)", "Gamma", "log", "gamma",
         sim, Gamma(link = "log"), list(sim$g), sim$y_glog, one, Xs, glmer_rec(mg), tmb_rec(mt),
         "log link: glmmTMB uses the observed information, exact the expected one")
mg <- glmer(y_ig ~ x + (1 | g), sim, family = inverse.gaussian(link = "log"), control = tight)
run_case("ig_log", "families_sim.csv", "y_ig ~ x + (1|g)", "inverse.gaussian", "log", "ig",
         sim, inverse.gaussian(link = "log"), list(sim$g), sim$y_ig, one, Xs, glmer_rec(mg), NULL,
         "glmmTMB has no inverse Gaussian family")
# Poisson, sqrt and identity links (the fixed part keeps eta > 0)
for (lk in c("sqrt", "identity")) {
  yv <- if (lk == "sqrt") "y_psqrt" else "y_pid"
  m <- glmer(as.formula(paste(yv, "~ x + (1 | g)")), sim, family = poisson(link = lk),
             control = tight)
  run_case(paste0("poisson_", lk), "families_sim.csv", paste(yv, "~ x + (1|g)"), "poisson", lk,
           "poisson", sim, poisson(link = lk), list(sim$g), sim[[yv]], one, Xs, glmer_rec(m))
}
# negative binomial: glmer.nb (its profile optimum, tol 5e-5) and glmmTMB nbinom2
fnb <- TICKS ~ YEAR + HEIGHT_c + (1 | BROOD) + (1 | LOCATION)
mg <- glmer.nb(fnb, grouse, control = tight)
mt <- glmmTMB(fnb, grouse, family = nbinom2)
run_case("grouseticks_nb", "grouseticks.csv", "TICKS ~ YEAR + HEIGHT_c + (1|BROOD) + (1|LOCATION)",
         "negative_binomial", "log", "nb", grouse, poisson(link = "log"),
         list(grouse$BROOD, grouse$LOCATION), grouse$TICKS, rep(1, nrow(grouse)), Xg,
         glmer_rec(mg), tmb_rec(mt))
mg <- glmer.nb(y_nb ~ x + (1 | g), sim, control = tight)
mt <- glmmTMB(y_nb ~ x + (1 | g), sim, family = nbinom2)
run_case("sim_nb", "families_sim.csv", "y_nb ~ x + (1|g)", "negative_binomial", "log", "nb",
         sim, poisson(link = "log"), list(sim$g), sim$y_nb, one, Xs, glmer_rec(mg), tmb_rec(mt))

out <- list(r_version = R.version.string, lme4 = as.character(packageVersion("lme4")),
            glmmTMB = as.character(packageVersion("glmmTMB")), cases = cases)
cat(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, null = "null"))
