# Reference for tests/glmm/test_glmm_battery.py (issue 18): a battery of GLMM
# cases beyond the visible glmer files and glmm_families -- binomial probit /
# cloglog / cauchit with random slopes, cbind() responses with crossed terms and
# an observation-level term, a proportion with weights, Poisson with offsets,
# crossed terms and sqrt / identity links, Gamma (log, inverse) and inverse
# Gaussian with a random slope, negative binomial with a slope and crossed,
# nAGQ = 25 (binomial Bernoulli and counts, Poisson with an offset, tiny groups),
# tiny groups (1-2 rows), singular fits, a 30-level fixed factor and
# quasi-complete separation.  R 4.2.2, lme4 1.1-31, glmmTMB 1.1.5.
# Run from the project root:
#   Rscript tests/reference/r/glmm_battery.R > tests/reference/glmm_battery.json
# (it writes the simulated data tests/data/glmm/battery_*.csv and reads them back).
#
# `exact` of each case is the optimum of glmer's objective evaluated exactly:
# the Laplace approximation with expected-information (Fisher) weights
# W = w (dmu/deta)^2 / (phi V(mu)) at the exact conditional modes u,
#   -2 log L = -2 sum log p(y_i | mu_i, phi) + |u|^2 + log det(Lambda'Z'WZ Lambda + I),
# binomial coefficients / log(y!) included (lme4's logLik), or for nAGQ > 1
# lme4's adaptive Gauss-Hermite rule (GHrule(nAGQ)) centred at the modes and
# scaled by the Fisher conditional SD, on the Laplace scale (the saturated
# log-likelihood that lme4's nAGQ > 1 logLik leaves out is included).  The
# evaluator is dense and independent of lme4 (Fisher scoring to the modes, Z and
# Lambda from lme4's glFormula); at the optimum it is checked against lme4's own
# deviance function (glmer(..., devFunOnly = TRUE), tolPwrss = 1e-14, called
# twice so that the second PIRLS starts at the modes): `lme4_devfun_minus_exact`.
# The NB shape and the Gamma / inverse Gaussian dispersion phi are one more
# parameter (log scale), as in tests/reference/r/glmm_families.R: for the NB the
# joint optimum is glmer.nb's profile optimum; for the Gamma / inverse Gaussian
# it is the maximum-likelihood dispersion of this Laplace approximation (not
# glmer's deviance/n plug-in; glmmTMB's for the canonical inverse link).
# Optimisation: nlminb from the best of the R fits (glmer with tight control,
# glmer.nb, glmmTMB), then Newton steps with numDeriv's Richardson gradient and
# Hessian on the parameters not at a bound.  SEs: lme4's vcov formula, the beta
# block of 2 H^-1, H the Hessian of -2 log L over the free (theta, beta) (at the
# estimated NB shape / dispersion: `se`; with its log in H too: `se_joint`).
# Conditional modes b = Lambda u and their conditional SDs from
# Lambda (Lambda'Z'WZ Lambda + I)^-1 Lambda' (ranef(m, condVar = TRUE)), fitted
# values and the linear predictor at every row, and predictions for new data
# (rows of the data, some with a new level: re.form = NULL with
# allow.new.levels = TRUE, and re.form = NA), all at the exact estimates.
suppressMessages({library(lme4); library(glmmTMB); library(MASS); library(numDeriv)
                  library(statmod); library(jsonlite)})
DIR <- "tests/data/glmm"
t_start <- proc.time()[["elapsed"]]

## ---------------------------------------------------------------- simulated data
lev <- function(prefix, k) sprintf("%s%02d", prefix, k)
# (1) Bernoulli, subjects x items crossed, a random slope for x by subject
set.seed(20270101)
ns <- 30; ni <- 16
bin <- do.call(rbind, lapply(seq_len(ns), function(s) data.frame(subj = s, item = sample(ni, 12))))
n <- nrow(bin)
bin$x <- round(rnorm(n), 4)
bin$f <- factor(sample(c("fa", "fb", "fc"), n, replace = TRUE))
S <- matrix(c(0.8^2, 0.3 * 0.8 * 0.5, 0.3 * 0.8 * 0.5, 0.5^2), 2)
us <- mvrnorm(ns, c(0, 0), S); ui <- rnorm(ni, 0, 0.6)
eta <- -0.3 + 0.7 * bin$x + 0.4 * (bin$f == "fb") - 0.3 * (bin$f == "fc") +
  us[bin$subj, 1] + us[bin$subj, 2] * bin$x + ui[bin$item]
bin$y_logit <- rbinom(n, 1, plogis(eta))
bin$y_probit <- rbinom(n, 1, pnorm(0.6 * eta))
bin$y_cloglog <- rbinom(n, 1, 1 - exp(-exp(0.6 * eta - 0.4)))
bin$y_cauchit <- rbinom(n, 1, pcauchy(0.6 * eta))
bin$subj <- lev("s", bin$subj); bin$item <- lev("i", bin$item)
write.csv(bin, file.path(DIR, "battery_bin.csv"), row.names = FALSE)

# (2) binomial counts, 15 sites x 8 years fully crossed, 4-30 trials
set.seed(20270102)
cnt <- expand.grid(site = 1:15, year = 1:8)
n <- nrow(cnt)
cnt$x <- round(runif(n, -1, 1), 4)
cnt$n <- sample(4:30, n, replace = TRUE)
us <- cbind(rnorm(15, 0, 0.7), rnorm(15, 0, 0.4)); uy <- rnorm(8, 0, 0.4)
eta <- -0.5 + 0.8 * cnt$x + us[cnt$site, 1] + us[cnt$site, 2] * cnt$x + uy[cnt$year] +
  rnorm(n, 0, 0.3)
cnt$s <- rbinom(n, cnt$n, plogis(eta))
cnt$s_probit <- rbinom(n, cnt$n, pnorm(0.6 * eta))
cnt$p_cloglog <- round(rbinom(n, cnt$n, 1 - exp(-exp(0.6 * eta - 0.3))) / cnt$n, 6)
cnt$site <- lev("t", cnt$site); cnt$year <- lev("y", cnt$year)
write.csv(cnt, file.path(DIR, "battery_binom.csv"), row.names = FALSE)

# (3) counts: 20 areas x 10 blocks (300 rows), exposure, a 30-level fixed factor
set.seed(20270103)
n <- 300
cp <- data.frame(a = sample(rep(1:20, length.out = n)), b = sample(rep(1:10, length.out = n)))
cp$x <- round(rnorm(n), 4)
cp$expo <- round(runif(n, 0.5, 20), 3)
cp$lexpo <- log(cp$expo)
cp$fac <- factor(lev("k", sample(rep(1:30, length.out = n))))
ua <- cbind(rnorm(20, 0, 0.5), rnorm(20, 0, 0.25)); ub <- rnorm(10, 0, 0.3)
eta <- -1 + 0.4 * cp$x + ua[cp$a, 1] + ua[cp$a, 2] * cp$x + ub[cp$b]
cp$y <- rpois(n, cp$expo * exp(eta))
cp$y_fac <- rpois(n, cp$expo * exp(eta + rnorm(30, 0, 0.5)[as.integer(cp$fac)]))
cp$y_sqrt <- rpois(n, (3 + 0.5 * cp$x + 0.5 * ua[cp$a, 1] + 0.3 * ua[cp$a, 2] * cp$x)^2)
cp$y_id <- rpois(n, 8 + 1.5 * cp$x + 3 * ua[cp$a, 1] + 3 * ub[cp$b])
cp$y_nb <- rnbinom(n, size = 2, mu = exp(1 + eta + 1))
cp$a <- lev("a", cp$a); cp$b <- lev("b", cp$b)
write.csv(cp, file.path(DIR, "battery_count.csv"), row.names = FALSE)

# (4) positive responses: 20 groups x 12 rows, random intercept and slope
set.seed(20270104)
n <- 240
ps <- data.frame(g = rep(1:20, each = 12), x = round(runif(n, 0, 2), 4))
ug <- cbind(rnorm(20, 0, 0.4), rnorm(20, 0, 0.2))
eta <- 1 + 0.5 * ps$x + ug[ps$g, 1] + ug[ps$g, 2] * ps$x
ps$y_glog <- signif(rgamma(n, shape = 3, scale = exp(eta) / 3), 8)
mu_inv <- 1 / (0.6 + 0.3 * ps$x + 0.1 * ug[ps$g, 1] + 0.06 * ug[ps$g, 2] * ps$x)
ps$y_ginv <- signif(rgamma(n, shape = 5, scale = mu_inv / 5), 8)
ps$y_ig <- signif(rinvgauss(n, mean = exp(0.3 * eta), dispersion = 0.3), 8)
ps$g <- lev("g", ps$g)
write.csv(ps, file.path(DIR, "battery_pos.csv"), row.names = FALSE)

# (5) tiny groups (1-2 rows), a zero-variance (singular) set, quasi-separation
set.seed(20270105)
sizes <- sample(1:2, 70, replace = TRUE)
tn <- data.frame(g = rep(seq_along(sizes), sizes))
n <- nrow(tn)
tn$x <- round(rnorm(n), 4)
ut <- rnorm(length(sizes), 0, 1.5)
tn$y_bin <- rbinom(n, 1, plogis(0.2 + 0.8 * tn$x + ut[tn$g]))
tn$y_pois <- rpois(n, exp(0.8 + 0.3 * tn$x + 0.7 * ut[tn$g]))
tn$g <- lev("h", tn$g)
write.csv(tn, file.path(DIR, "battery_tiny.csv"), row.names = FALSE)

set.seed(20270106)
n <- 200
sg <- data.frame(g = sample(rep(1:12, length.out = n)), x = round(rnorm(n), 4))
sg$f <- factor(sample(c("fa", "fb", "fc"), n, replace = TRUE, prob = c(0.45, 0.4, 0.15)))
sg$y_null <- rbinom(n, 1, plogis(-0.2 + 0.5 * sg$x))            # no group variance
ugs <- rnorm(12, 0, 0.5)
sg$y_pslope <- rpois(n, exp(1 + 0.3 * sg$x + ugs[sg$g]))        # no slope variance
sg$y_quasi <- rbinom(n, 1, plogis(0.1 + 0.6 * sg$x + ugs[sg$g]))
sg$y_quasi[sg$f == "fc"] <- 1L                                   # level fc: all 1
sg$g <- lev("m", sg$g)
write.csv(sg, file.path(DIR, "battery_singular.csv"), row.names = FALSE)

read_back <- function(name, factors) {
  d <- read.csv(file.path(DIR, name), stringsAsFactors = FALSE)
  for (v in factors) d[[v]] <- factor(d[[v]])
  d
}
bin <- read_back("battery_bin.csv", c("subj", "item", "f"))
cnt <- read_back("battery_binom.csv", c("site", "year"))
cp <- read_back("battery_count.csv", c("a", "b", "fac"))
ps <- read_back("battery_pos.csv", "g")
tn <- read_back("battery_tiny.csv", "g")
sg <- read_back("battery_singular.csv", c("g", "f"))
contra <- read.csv(file.path(DIR, "contraception.csv"), stringsAsFactors = TRUE)
contra$district <- factor(contra$district)

## ---------------------------------------------------------------- the evaluator
# kind: binomial, poisson, nb, gamma, ig.  a: the NB shape or the dispersion phi.
make_problem <- function(formula, data, fam, kind, nAGQ = 1, weights = NULL, offset = NULL) {
  args <- list(formula, data = data, family = fam)
  if (!is.null(weights)) args$weights <- weights
  if (!is.null(offset)) args$offset <- offset
  gf <- do.call(glFormula, args)
  fr <- gf$fr; rt <- gf$reTrms
  yr <- model.response(fr)
  pw <- model.weights(fr); if (is.null(pw)) pw <- rep(1, nrow(fr))
  if (is.matrix(yr)) { tot <- rowSums(yr); y <- ifelse(tot > 0, yr[, 1] / tot, 0); w <- pw * tot }
  else { y <- as.numeric(yr); if (is.factor(yr)) y <- as.numeric(yr != levels(yr)[1]); w <- pw }
  off <- model.offset(fr); if (is.null(off)) off <- rep(0, nrow(fr))
  Z <- t(as.matrix(rt$Zt)); X <- gf$X
  list(y = y, w = w, off = off, X = X, Z = Z, rt = rt, fam = fam, kind = kind, nAGQ = nAGQ,
       k = length(rt$theta), p = ncol(X), lower = rt$lower, gf = gf)
}

lambda_of <- function(P, theta) { Lt <- P$rt$Lambdat; Lt@x <- theta[P$rt$Lind]; t(as.matrix(Lt)) }

make_eval <- function(P) {
  y <- P$y; w <- P$w; X <- P$X; Z <- P$Z; kind <- P$kind; fam0 <- P$fam
  ll <- function(mu, a) switch(kind,
    binomial = dbinom(round(w * y), round(w), mu, log = TRUE),
    poisson = w * dpois(y, mu, log = TRUE),
    nb = w * dnbinom(y, size = a, mu = mu, log = TRUE),
    gamma = w * dgamma(y, shape = 1 / a, scale = mu * a, log = TRUE),
    ig = w * dinvgauss(y, mean = mu, dispersion = a, log = TRUE))
  famof <- function(a) if (kind == "nb") negative.binomial(a, link = fam0$link) else fam0
  phiof <- function(a) if (kind %in% c("gamma", "ig")) a else 1
  ustore <- new.env(); ustore$u <- rep(0, ncol(Z))
  modes <- function(theta, beta, a) {
    f <- famof(a); phi <- phiof(a)
    Lam <- lambda_of(P, theta); ZL <- Z %*% Lam
    base <- drop(X %*% beta) + P$off
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
    if (is.null(st) || !ok) return(NULL)
    ustore$u <- u
    W <- w * st$me^2 / (phi * f$variance(st$mu))
    A <- crossprod(ZL, W * ZL) + diag(ncol(Z))
    list(u = u, st = st, A = A, Lam = Lam, ZL = ZL, base = base, f = f)
  }
  value <- function(theta, beta, a = NA) {
    m <- modes(theta, beta, a); if (is.null(m)) return(Inf)
    if (P$nAGQ == 1)
      return(-2 * sum(ll(m$st$mu, a)) + sum(m$u^2) +
             as.numeric(determinant(m$A, logarithm = TRUE)$modulus))
    # adaptive Gauss-Hermite, one scalar term: per level, nodes u_j + s_j z_k
    gh <- GHrule(P$nAGQ); s <- 1 / sqrt(diag(m$A))
    grp <- apply(P$Z != 0, 1, which)
    tot <- 0
    for (j in seq_along(m$u)) {
      rows <- which(grp == j); zl <- m$ZL[rows, j]
      lv <- sapply(seq_len(nrow(gh)), function(kk) {
        uj <- m$u[j] + s[j] * gh[kk, "z"]
        mu <- m$f$linkinv(m$base[rows] + zl * uj)
        sum(ll_rows(mu, a, rows)) - uj^2 / 2 + gh[kk, "z"]^2 / 2 + log(gh[kk, "w"])
      })
      mx <- max(lv)
      tot <- tot - 2 * (log(s[j]) + mx + log(sum(exp(lv - mx))))
    }
    tot
  }
  ll_rows <- function(mu, a, rows) switch(kind,
    binomial = dbinom(round(w[rows] * y[rows]), round(w[rows]), mu, log = TRUE),
    poisson = w[rows] * dpois(y[rows], mu, log = TRUE))
  list(value = value, modes = modes, ll = ll)
}

free_of <- function(P, par) {
  k <- P$k
  c(!(P$lower == 0 & abs(par[1:k]) < 1e-9), rep(TRUE, length(par) - k))
}

exact_fit <- function(P, ev, starts, has_a) {
  k <- P$k; p <- P$p
  obj <- function(par) ev$value(par[1:k], par[k + 1:p], if (has_a) exp(par[k + p + 1]) else NA)
  vals <- sapply(starts, obj)
  start <- starts[[which.min(vals)]]
  lower <- c(P$lower, rep(-Inf, p + has_a))
  start <- pmax(start, lower)
  o <- nlminb(start, obj, lower = lower, control = list(eval.max = 10000, iter.max = 5000,
                                                          rel.tol = 1e-15, x.tol = 1e-12))
  par <- o$par; par[1:k][P$lower == 0 & par[1:k] < 1e-7] <- 0
  val <- obj(par); steps <- 0
  for (s in 1:30) {
    fr <- free_of(P, par)
    sub <- function(q) { pp <- par; pp[fr] <- q; obj(pp) }
    g <- grad(sub, par[fr]); H <- hessian(sub, par[fr])
    step <- -solve(H, g); dec <- 0.5 * sum(-g * step)
    if (!is.finite(dec) || dec < 1e-13) break
    t <- 1; moved <- FALSE
    for (h in 1:30) {
      pn <- par; pn[fr] <- par[fr] + t * step
      if (all(pn[1:k] >= P$lower)) { vn <- obj(pn); if (vn < val) { moved <- TRUE; break } }
      t <- t / 2
    }
    if (!moved) break
    par <- pn; val <- vn; steps <- steps + 1
  }
  fr <- free_of(P, par)
  sub <- function(q) { pp <- par; pp[fr] <- q; obj(pp) }
  g <- grad(sub, par[fr]); H <- hessian(sub, par[fr])
  nb <- sum(fr[1:(k + p)])
  Hc <- H[1:nb, 1:nb, drop = FALSE]
  ib <- nb - p + 1:p
  se <- sqrt(diag(2 * solve(Hc)))[ib]
  se_joint <- if (has_a) sqrt(diag(2 * solve(H)))[ib] else se
  # the gradient of the bound parameters (one-sided, pointing into the interior)
  bound_grad <- sapply(which(!fr), function(i) {
    h <- 1e-6; pp <- par; pp[i] <- h; (obj(pp) - val) / h })
  list(minus_2_loglik = val, theta = par[1:k], beta = par[k + 1:p],
       param = if (has_a) exp(par[k + p + 1]) else NULL, se = se, se_joint = se_joint,
       gradient = g, max_abs_gradient = max(abs(g)), newton_steps = steps,
       at_lower_bound = !fr[1:k], bound_forward_slope = bound_grad,
       nlminb_message = o$message, objective_at_starts = as.list(vals),
       newton_decrement = 0.5 * sum(g * solve(H, g)),
       hessian_min_eigenvalue = min(eigen(H, symmetric = TRUE, only.values = TRUE)$values))
}

ranef_of <- function(P, ev, ex, has_a) {
  a <- if (has_a) ex$param else NA
  m <- ev$modes(ex$theta, ex$beta, a)
  b <- drop(m$Lam %*% m$u)
  V <- m$Lam %*% solve(m$A, t(m$Lam))
  rt <- P$rt; Gp <- rt$Gp; cn <- rt$cnms
  out <- list()
  for (t in seq_along(cn)) {
    fac <- names(cn)[t]; nc <- length(cn[[t]]); idx <- (Gp[t] + 1):Gp[t + 1]
    nl <- length(idx) / nc
    B <- matrix(b[idx], ncol = nc, byrow = TRUE)
    SD <- matrix(sqrt(diag(V)[idx]), ncol = nc, byrow = TRUE)
    levs <- levels(rt$flist[[fac]])
    for (c in seq_len(nc)) {
      key <- if (is.null(out[[fac]])) 1 else length(out[[fac]]$terms) + 1
      if (is.null(out[[fac]])) out[[fac]] <- list(levels = levs, terms = list(), modes = list(),
                                                   condsd = list())
      out[[fac]]$terms[[length(out[[fac]]$terms) + 1]] <- cn[[t]][c]
      out[[fac]]$modes[[cn[[t]][c]]] <- B[, c]
      out[[fac]]$condsd[[cn[[t]][c]]] <- SD[, c]
    }
  }
  eta <- m$st$eta
  list(ranef = out, b = b, eta = eta, mu = m$st$mu, f = m$f)
}

# new data: rows `rows` of the data; for rows in `new_rows` the factor `new_factor`
# is given the level "new" (random effects 0 for every term of that factor)
predictions <- function(P, data, re, ex, rows, new_factor, new_rows) {
  nd <- data[rows, , drop = FALSE]
  if (!is.null(new_factor)) {
    nd[[new_factor]] <- as.character(nd[[new_factor]])
    nd[[new_factor]][new_rows] <- "new"
  }
  X <- P$X[rows, , drop = FALSE]; off <- P$off[rows]
  fixed_eta <- drop(X %*% ex$beta) + off
  Z <- P$Z[rows, , drop = FALSE]
  rt <- P$rt; Gp <- rt$Gp; cn <- rt$cnms
  re_eta <- rep(0, length(rows))
  for (t in seq_along(cn)) {
    idx <- (Gp[t] + 1):Gp[t + 1]
    contrib <- drop(Z[, idx, drop = FALSE] %*% re$b[idx])
    if (!is.null(new_factor) && names(cn)[t] == new_factor) contrib[new_rows] <- 0
    re_eta <- re_eta + contrib
  }
  cols <- lapply(nd, function(v) if (is.factor(v)) as.character(v) else v)
  list(newdata = cols,
       re_form_null_link = fixed_eta + re_eta, re_form_null_response = re$f$linkinv(fixed_eta + re_eta),
       re_form_na_link = fixed_eta, re_form_na_response = re$f$linkinv(fixed_eta))
}

lme4_check <- function(P, formula, data, ex, weights, offset) {
  # lme4's own deviance function at the exact estimates (tolPwrss = 1e-14, twice)
  if (!(P$kind %in% c("binomial", "poisson"))) return(NULL)
  ctl <- glmerControl(tolPwrss = 1e-14)
  args <- list(formula, data = data, family = P$fam, nAGQ = P$nAGQ, devFunOnly = TRUE,
               control = ctl)
  if (!is.null(weights)) args$weights <- weights
  if (!is.null(offset)) args$offset <- offset
  df <- tryCatch(do.call(glmer, args), error = function(e) NULL)
  if (is.null(df)) return(list(error = "devFunOnly failed"))
  par <- if (P$nAGQ == 1) c(ex$theta, ex$beta) else c(ex$theta, ex$beta)
  v1 <- tryCatch(df(par), error = function(e) NA); v2 <- tryCatch(df(par), error = function(e) NA)
  rho <- environment(df)
  sat <- if (P$kind == "binomial") sum(dbinom(round(P$w * P$y), round(P$w), P$y, log = TRUE))
         else sum(P$w * dpois(P$y, P$y, log = TRUE))
  lme4_scale <- if (P$nAGQ > 1) v2 - 2 * sat else v2
  list(lme4_devfun = v2, saturated_loglik = sat,
       lme4_devfun_minus_exact = lme4_scale - ex$minus_2_loglik)
}

fixed_of <- function(m) { cf <- coef(summary(m)); if (is.list(cf) && !is.matrix(cf)) cf <- cf$cond
  list(names = rownames(cf), estimate = unname(cf[, 1]), se = unname(cf[, 2])) }

cases <- list()
run_case <- function(name, data_file, data, formula, formula_py, family_py, link, kind,
                     fam, nAGQ = 1, weights = NULL, offset = NULL, offset_py = NULL,
                     weights_py = NULL, new_factor = NULL, note = "", subset_note = NULL,
                     data_fit = data) {
  only <- Sys.getenv("BATTERY_ONLY")  # debugging: run one case
  if (nzchar(only) && only != name) return(invisible())
  t0 <- proc.time()[["elapsed"]]
  has_a <- kind %in% c("nb", "gamma", "ig")
  P <- make_problem(formula, data_fit, fam, kind, nAGQ, weights, offset)
  ev <- make_eval(P)
  starts <- list(); r_fits <- list()
  msgs <- character(0)
  wcall <- function(expr) withCallingHandlers(expr, warning = function(w) {
    msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") })
  tight <- glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5), tolPwrss = 1e-12)
  if (kind == "nb") {
    args <- list(formula, data = data_fit, control = tight)
    if (!is.null(offset)) args$offset <- offset
    mg <- wcall(do.call(glmer.nb, args))
    a0 <- getME(mg, "glmer.nb.theta")
    starts$glmer.nb <- c(getME(mg, "theta"), fixef(mg), log(a0))
    r_fits$glmer.nb <- list(minus_2_loglik = -2 * as.numeric(logLik(mg)), nb_shape = a0,
                            theta = unname(getME(mg, "theta")), fixed = fixed_of(mg),
                            df = attr(logLik(mg), "df"), is_singular = isSingular(mg))
  } else {
    args <- list(formula, data = data_fit, family = fam, nAGQ = nAGQ, control = tight)
    if (!is.null(weights)) args$weights <- weights
    if (!is.null(offset)) args$offset <- offset
    mg <- tryCatch(wcall(do.call(glmer, args)), error = function(e) {
      msgs <<- c(msgs, paste("glmer failed:", conditionMessage(e))); NULL })
    if (is.null(mg)) {  # glmer's start (the glm means) failed: start it from glm's fixef
      g0 <- glm(nobars(formula), family = fam, data = data_fit)
      args$start <- list(fixef = coef(g0))
      mg <- tryCatch(wcall(do.call(glmer, args)), error = function(e) {
        msgs <<- c(msgs, paste("glmer from glm's fixef failed:", conditionMessage(e))); NULL })
    }
    if (is.null(mg)) {  # glmer cannot fit it: starts from glm, theta a fraction of |b0|
      g0 <- glm(nobars(formula), family = fam, data = data_fit)
      disp <- summary(g0)$dispersion
      for (fr in c(0.02, 0.1, 0.3))
        starts[[paste0("glm_", fr)]] <- c(rep(fr * abs(coef(g0)[1]), P$k) * (P$lower == 0),
                                          coef(g0), if (has_a) log(disp))
    } else {
    th <- getME(mg, "theta")
    if (has_a) {
      s2 <- sigma(mg)^2
      starts$glmer <- c(th, fixef(mg), log(s2))
      starts$glmer_scaled <- c(th * sigma(mg), fixef(mg), log(s2))
    } else starts$glmer <- c(th, fixef(mg))
    r_fits$glmer <- list(minus_2_loglik = -2 * as.numeric(logLik(mg)),
                         theta = unname(th), fixed = fixed_of(mg), df = attr(logLik(mg), "df"),
                         is_singular = isSingular(mg), sigma = sigma(mg))
    }
  }
  if (kind %in% c("nb", "gamma")) {
    tfam <- if (kind == "nb") nbinom2 else fam
    args <- list(formula, data = data_fit, family = tfam)
    if (!is.null(offset)) args$offset <- offset
    mt <- tryCatch(wcall(do.call(glmmTMB, args)), error = function(e) NULL)
    if (!is.null(mt) && P$k == sum(sapply(P$rt$cnms, length))) {
      # scalar terms only: glmmTMB's SDs are theta
      sds <- unlist(lapply(VarCorr(mt)$cond, function(v) attr(v, "stddev")))
      a0 <- if (kind == "nb") sigma(mt) else sigma(mt)^2
      starts$glmmTMB <- c(sds, fixef(mt)$cond, log(a0))
    }
  }
  ex <- exact_fit(P, ev, starts, has_a)
  ex$fixed_names <- colnames(P$X)
  ex$df <- P$k + P$p + has_a  # attr(logLik(m), "df")
  ex$theta_lower <- P$lower
  re <- ranef_of(P, ev, ex, has_a)
  nr <- nrow(data_fit)
  rows <- unique(c(1:6, nr - 2:0))
  pred <- predictions(P, data_fit, re, ex, rows, new_factor, if (is.null(new_factor)) NULL else 4:6)
  chk <- lme4_check(P, formula, data_fit, ex, weights, offset)
  cases[[name]] <<- list(
    case = name, dataset_file = data_file, formula = formula_py,
    formula_r = paste(deparse(formula), collapse = " "), family = family_py, link = link,
    nAGQ = nAGQ, weights = weights_py, offset = offset_py, note = note,
    subset = subset_note, nobs = nr,
    exact = ex, ranef = re$ranef, fitted = re$mu, linear_predictor = re$eta,
    predictions = pred, lme4_check = chk, r_fits = r_fits, r_messages = unique(msgs),
    seconds = proc.time()[["elapsed"]] - t0)
  message(sprintf("%-28s %8.1fs  -2logL %.8f  steps %d  grad %.1e  lme4-exact %s", name,
                  proc.time()[["elapsed"]] - t0, ex$minus_2_loglik, ex$newton_steps,
                  ex$max_abs_gradient,
                  if (is.null(chk$lme4_devfun_minus_exact)) "-" else
                    format(chk$lme4_devfun_minus_exact, digits = 3)))
}

## ---------------------------------------------------------------- cases
B <- "battery_bin.csv"; BC <- "battery_binom.csv"; CP <- "battery_count.csv"
PS <- "battery_pos.csv"; TN <- "battery_tiny.csv"; SG <- "battery_singular.csv"

run_case("bin_probit_slope", B, bin, y_probit ~ x + f + (x | subj),
         "y_probit ~ x + f + (x|subj)", "binomial", "probit", "binomial",
         binomial("probit"), new_factor = "subj")
run_case("bin_cloglog_slope_crossed", B, bin, y_cloglog ~ x + (x | subj) + (1 | item),
         "y_cloglog ~ x + (x|subj) + (1|item)", "binomial", "cloglog", "binomial",
         binomial("cloglog"), new_factor = "item")
run_case("bin_cauchit_uncorrelated", B, bin, y_cauchit ~ x + (x || subj),
         "y_cauchit ~ x + (x||subj)", "binomial", "cauchit", "binomial", binomial("cauchit"),
         new_factor = "subj", note = "R's double-bar spelling: uncorrelated intercept and slope")
run_case("bin_logit_crossed_slope", B, bin, y_logit ~ x + f + (x | subj) + (1 | item),
         "y_logit ~ x + f + (x|subj) + (1|item)", "binomial", "logit", "binomial",
         binomial(), new_factor = "subj")
run_case("bin_logit_slope_by_item", B, bin, y_logit ~ x + (1 | subj) + (0 + x | item),
         "y_logit ~ x + (1|subj) + (0 + x|item)", "binomial", "logit", "binomial",
         binomial(), new_factor = "item", note = "slope-only term (0 + x | item)")
run_case("bin_agq25_logit", B, bin, y_logit ~ x + f + (1 | subj),
         "y_logit ~ x + f + (1|subj)", "binomial", "logit", "binomial", binomial(),
         nAGQ = 25, new_factor = "subj")
run_case("bin_agq25_probit", B, bin, y_probit ~ x + (1 | item),
         "y_probit ~ x + (1|item)", "binomial", "probit", "binomial", binomial("probit"),
         nAGQ = 25, new_factor = "item")

run_case("cbind_logit_crossed", BC, cnt, cbind(s, n - s) ~ x + (1 | site) + (1 | year),
         "cbind(s, n - s) ~ x + (1|site) + (1|year)", "binomial", "logit", "binomial",
         binomial(), new_factor = "year")
run_case("cbind_probit_slope_crossed", BC, cnt,
         cbind(s_probit, n - s_probit) ~ x + (x | site) + (1 | year),
         "cbind(s_probit, n - s_probit) ~ x + (x|site) + (1|year)", "binomial", "probit",
         "binomial", binomial("probit"), new_factor = "site")
run_case("cbind_observation_level", BC, cnt, cbind(s, n - s) ~ x + (1 | site) + (1 | site:year),
         "cbind(s, n - s) ~ x + (1|site) + (1|site:year)", "binomial", "logit", "binomial",
         binomial(), note = "observation-level random effect spelled site:year")
run_case("prop_weights_cloglog", BC, cnt, p_cloglog ~ x + (1 | site) + (1 | year),
         "p_cloglog ~ x + (1|site) + (1|year)", "binomial", "cloglog", "binomial",
         binomial("cloglog"), weights = cnt$n, weights_py = "n", new_factor = "site",
         note = "proportion response with weights = trials")
run_case("cbind_agq25", BC, cnt, cbind(s, n - s) ~ x + (1 | site),
         "cbind(s, n - s) ~ x + (1|site)", "binomial", "logit", "binomial", binomial(),
         nAGQ = 25, new_factor = "site")

run_case("pois_offset_crossed", CP, cp, y ~ x + offset(log(expo)) + (1 | a) + (1 | b),
         "y ~ x + offset(log(expo)) + (1|a) + (1|b)", "poisson", "log", "poisson", poisson(),
         new_factor = "a")
run_case("pois_offset_argument_slope", CP, cp, y ~ x + (x | a),
         "y ~ x + (x|a)", "poisson", "log", "poisson", poisson(), offset = cp$lexpo,
         offset_py = "lexpo", new_factor = "a", note = "offset = lexpo argument")
run_case("pois_sqrt_slope", CP, cp, y_sqrt ~ x + (x | a), "y_sqrt ~ x + (x|a)", "poisson",
         "sqrt", "poisson", poisson("sqrt"), new_factor = "a")
run_case("pois_identity_crossed", CP, cp, y_id ~ x + (1 | a) + (1 | b),
         "y_id ~ x + (1|a) + (1|b)", "poisson", "identity", "poisson", poisson("identity"),
         new_factor = "b")
run_case("pois_agq25_offset", CP, cp, y ~ x + offset(log(expo)) + (1 | a),
         "y ~ x + offset(log(expo)) + (1|a)", "poisson", "log", "poisson", poisson(),
         nAGQ = 25, new_factor = "a")
run_case("pois_many_level_factor", CP, cp, y_fac ~ x + fac + offset(log(expo)) + (1 | b),
         "y_fac ~ x + fac + offset(log(expo)) + (1|b)", "poisson", "log", "poisson", poisson(),
         new_factor = "b", note = "30-level fixed factor")
run_case("nb_slope", CP, cp, y_nb ~ x + (x | a), "y_nb ~ x + (x|a)", "negative_binomial",
         "log", "nb", poisson(), new_factor = "a")
run_case("nb_crossed", CP, cp, y_nb ~ x + (1 | a) + (1 | b), "y_nb ~ x + (1|a) + (1|b)",
         "negative_binomial", "log", "nb", poisson(), new_factor = "b")

run_case("gamma_log_slope", PS, ps, y_glog ~ x + (x | g), "y_glog ~ x + (x|g)", "Gamma", "log",
         "gamma", Gamma("log"), new_factor = "g")
run_case("gamma_inverse_slope", PS, ps, y_ginv ~ x + (x | g), "y_ginv ~ x + (x|g)", "Gamma",
         "inverse", "gamma", Gamma("inverse"), new_factor = "g")
run_case("ig_log_slope", PS, ps, y_ig ~ x + (x | g), "y_ig ~ x + (x|g)", "inverse.gaussian",
         "log", "ig", inverse.gaussian("log"), new_factor = "g")

run_case("tiny_groups_binary", TN, tn, y_bin ~ x + (1 | g), "y_bin ~ x + (1|g)", "binomial",
         "logit", "binomial", binomial(), new_factor = "g", note = "70 groups of 1-2 rows")
run_case("tiny_groups_binary_agq25", TN, tn, y_bin ~ x + (1 | g), "y_bin ~ x + (1|g)",
         "binomial", "logit", "binomial", binomial(), nAGQ = 25, new_factor = "g")
run_case("tiny_groups_poisson", TN, tn, y_pois ~ x + (1 | g), "y_pois ~ x + (1|g)", "poisson",
         "log", "poisson", poisson(), new_factor = "g")

run_case("singular_binary", SG, sg, y_null ~ x + (1 | g), "y_null ~ x + (1|g)", "binomial",
         "logit", "binomial", binomial(), new_factor = "g", note = "no group variance")
run_case("singular_poisson_slope", SG, sg, y_pslope ~ x + (x | g), "y_pslope ~ x + (x|g)",
         "poisson", "log", "poisson", poisson(), new_factor = "g", note = "no slope variance")
sg_sub <- droplevels(sg[sg$f != "fc", ])
run_case("quasi_separation", SG, sg, y_quasi ~ x + f + (1 | g), "y_quasi ~ x + f + (1|g)",
         "binomial", "logit", "binomial", binomial(), new_factor = "g", data_fit = sg_sub,
         subset_note = "f != 'fc'",
         note = paste("level fc of f is all 1: f[T.fc] is +Inf; the limit of the fit is the fit",
                      "without the fc rows (they leave the likelihood), fitted here"))

run_case("cbind_nested", BC, cnt, cbind(s, n - s) ~ x + (1 | site/year),
         "cbind(s, n - s) ~ x + (1|site/year)", "binomial", "logit", "binomial", binomial(),
         note = "nested spelling site/year: (1|year:site) + (1|site)")
run_case("bin_factor_slope", B, bin, y_logit ~ f + (1 | subj) + (0 + f | item),
         "y_logit ~ f + (1|subj) + (0 + f|item)", "binomial", "logit", "binomial", binomial(),
         new_factor = "item", note = "3 x 3 covariance of a factor's levels by item")
run_case("nb_offset", CP, cp, y_nb ~ x + offset(log(expo)) + (1 | a),
         "y_nb ~ x + offset(log(expo)) + (1|a)", "negative_binomial", "log", "nb", poisson(),
         new_factor = "a")
run_case("ig_inverse_square", PS, ps, y_ig ~ x + (1 | g), "y_ig ~ x + (1|g)",
         "inverse.gaussian", "1/mu^2", "ig", inverse.gaussian(), new_factor = "g",
         note = "inverse Gaussian with its canonical link 1/mu^2")
run_case("gamma_identity", PS, ps, y_glog ~ x + (1 | g), "y_glog ~ x + (1|g)", "Gamma",
         "identity", "gamma", Gamma("identity"), new_factor = "g")

run_case("contraception_cloglog_slope", "contraception.csv", contra,
         use ~ age + urban + (urban | district), "use ~ age + urban + (urban|district)",
         "binomial", "cloglog", "binomial", binomial("cloglog"), new_factor = "district")

out <- list(r_version = R.version.string, lme4 = as.character(packageVersion("lme4")),
            glmmTMB = as.character(packageVersion("glmmTMB")),
            seconds = proc.time()[["elapsed"]] - t_start, cases = cases)
cat(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, null = "null", na = "null"))
