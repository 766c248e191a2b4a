# Reference for tests/design/test_structured_re.py (issue 21): glmmTMB fits with
# structured random-effect covariances (ar1, toep, cs, diag over a visit factor,
# next to a crossed (1 | rater) term), REML and ML, and fits with parameters held
# fixed (glmmTMB's map = with the held value in start =).
# R 4.2.2, glmmTMB 1.1.5.  Run from the project root:
#   Rscript tests/reference/r/struct_re.R > tests/reference/struct_re.json
# It writes tests/data/struct/struct_re.csv (simulated) the first time and always
# fits the data as read back from that CSV.
suppressMessages({library(glmmTMB)})
csv <- "tests/data/struct/struct_re.csv"
if (!file.exists(csv)) {
  set.seed(20261202)
  nsub <- 40; visits <- paste0("V", 1:4); nrater <- 8
  d <- expand.grid(rep = 1:2, visit = visits, subject = 1:nsub, stringsAsFactors = FALSE)
  d$time <- as.integer(sub("V", "", d$visit))
  d$arm <- ifelse(d$subject <= nsub / 2, "ARM_A", "ARM_B")
  d$rater <- paste0("R", sample(1:nrater, nrow(d), replace = TRUE))
  phi <- 0.6; sd_u <- 2.5
  S <- sd_u^2 * phi^abs(outer(1:4, 1:4, "-"))
  U <- MASS::mvrnorm(nsub, rep(0, 4), S)
  r <- rnorm(nrater, 0, 1.2)
  d$y <- 10 + 0.5 * d$time + 1.0 * (d$arm == "ARM_B") +
    U[cbind(d$subject, d$time)] + r[as.integer(sub("R", "", d$rater))] + rnorm(nrow(d), 0, 1)
  d <- d[-sample(nrow(d), 16), c("subject", "visit", "rep", "time", "arm", "rater", "y")]
  d$y <- round(d$y, 4)
  write.csv(d, csv, row.names = FALSE)
}
data <- read.csv(csv, stringsAsFactors = TRUE)
data$subject <- factor(data$subject)
ss <- read.csv("datasets/sleepstudy.csv", stringsAsFactors = TRUE)
ss$Subject <- factor(ss$Subject)

tight <- function(m) {
  # Newton steps on glmmTMB's objective (TMB gradient, Hessian by optimHess) from the
  # default optimum (nlminb stops with gradients up to 1e-3 on the ML fits); the fit
  # object is then set to that point (fixef, VarCorr, sigma, logLik read m$fit)
  par <- m$fit$par
  for (i in 1:5) {
    g <- m$obj$gr(par)
    if (max(abs(g)) < 1e-10) break
    H <- optimHess(par, m$obj$fn, m$obj$gr)
    par <- par - drop(solve(H, drop(g)))
  }
  m$fit$objective <- m$obj$fn(par)
  m$fit$par <- par
  full <- m$obj$env$last.par
  m$fit$parfull <- full
  m
}

dense_se <- function(m, d) {
  # sqrt(diag((X'V^-1X)^-1)) with V = Z G Z' + sigma^2 I built from VarCorr
  X <- model.matrix(m)
  vc <- VarCorr(m)$cond
  n <- nrow(d); V <- diag(sigma(m)^2, n)
  for (g in names(vc)) {
    G <- vc[[g]]
    terms <- rownames(G)
    grp <- sub("\\.[0-9]+$", "", g)
    Zt <- model.matrix(as.formula(paste("~ 0 +", if (all(grepl("^visit", terms))) "visit"
                                        else "1")), d)
    if (terms[1] == "(Intercept)" && length(terms) == 2) Zt <- cbind(1, d$Days)
    same <- outer(as.character(d[[grp]]), as.character(d[[grp]]), "==")
    V <- V + same * (Zt %*% G %*% t(Zt))
  }
  sqrt(diag(solve(t(X) %*% solve(V, X))))
}

vc_rows <- function(m) {
  # VarCorr(m)$cond in the shape of lme4's as.data.frame(VarCorr()): per group its
  # variances, then its covariances (sdcor the correlation); Residual last
  vc <- VarCorr(m)$cond
  rows <- list()
  for (g in names(vc)) {
    G <- vc[[g]]; terms <- rownames(G); sd <- sqrt(diag(G))
    for (i in seq_along(terms))
      rows[[length(rows) + 1]] <- list(group = g, var1 = terms[i], var2 = NULL,
                                       vcov = G[i, i], sdcor = sd[[i]])
    for (i in seq_along(terms)) for (j in seq_along(terms)) if (j > i)
      rows[[length(rows) + 1]] <- list(group = g, var1 = terms[i], var2 = terms[j],
                                       vcov = G[i, j], sdcor = G[i, j] / (sd[[i]] * sd[[j]]))
  }
  rows[[length(rows) + 1]] <- list(group = "Residual", var1 = NULL, var2 = NULL,
                                   vcov = sigma(m)^2, sdcor = sigma(m))
  rows
}

out1 <- function(m, d, extra = list()) {
  c(list(loglik = as.numeric(logLik(m)), df = attr(logLik(m), "df"),
         nobs = nobs(m),
         fixed = list(names = names(fixef(m)$cond), estimate = unname(fixef(m)$cond),
                      se_gls = unname(dense_se(m, d))),
         theta = unname(getME(m, "theta")), sigma = sigma(m),
         varcorr = vc_rows(m),
         convergence = m$fit$message,
         max_abs_gradient = max(abs(m$obj$gr(m$fit$par)))), extra)
}

fits <- list()
cross <- c(ar1 = "ar1", toep = "toep", cs = "cs", diag = "diag")
for (k in names(cross)) {
  f <- paste0("y ~ time + arm + ", cross[[k]], "(0 + visit | subject) + (1 | rater)")
  for (reml in c(TRUE, FALSE)) {
    m <- glmmTMB(as.formula(f), data = data, REML = reml)
    mt <- tight(m)
    fits[[paste0(k, if (reml) "_reml" else "_ml")]] <- out1(mt, data, list(
      formula = f, method = if (reml) "REML" else "ML",
      r_call = sprintf("glmmTMB(%s, data = data, REML = %s), refit tight", f, reml),
      loglik_default = as.numeric(logLik(m))))
  }
}
for (k in c("us", "cs", "diag")) {
  f <- paste0("Reaction ~ Days + ", k, "(Days | Subject)")
  m <- glmmTMB(as.formula(f), data = ss, REML = FALSE)
  fits[[paste0("sleep_", k, "_ml")]] <- out1(tight(m), ss, list(
    formula = f, method = "ML",
    r_call = sprintf("glmmTMB(%s, data = sleepstudy, REML = FALSE), refit tight", f)))
}

# parameters held fixed: glmmTMB's map (NA = held at its start value)
held <- function(f, d, reml, theta0, mapv, what, betad = NULL) {
  start <- list(theta = theta0)
  map <- list(theta = factor(mapv))
  if (!is.null(betad)) {  # sigma held: betad = log(sigma^2)
    start$betad <- betad
    map$betad <- factor(NA)
  }
  m <- glmmTMB(as.formula(f), data = d, REML = reml, start = start, map = map)
  m2 <- tight(m)
  out1(m2, d, list(formula = f, method = if (reml) "REML" else "ML", held = what,
                   r_call = sprintf("glmmTMB(%s, REML = %s, start = list(theta = c(%s)%s), map = list(theta = factor(c(%s))%s))",
                                    f, reml, paste(signif(theta0, 15), collapse = ", "),
                                    if (is.null(betad)) "" else sprintf(", betad = %s", signif(betad, 15)),
                                    paste(mapv, collapse = ", "),
                                    if (is.null(betad)) "" else ", betad = factor(NA)"),
                   n_free_theta = sum(!is.na(mapv))))
}
fs <- "Reaction ~ Days + us(Days | Subject)"
fits$sleep_held_var_reml <- held(fs, ss, TRUE, c(log(25), 0, 0), c(NA, 1, 2),
                                 list(`Subject: (Intercept)` = 625))
x02 <- 0.2 / sqrt(1 - 0.2^2)  # glmmTMB us 2x2: corr = l21 / sqrt(1 + l21^2)
fits$sleep_held_corr_reml <- held(fs, ss, TRUE, c(3, 1.5, x02), c(1, 2, NA),
                                  list(`Subject: corr((Intercept), Days)` = 0.2))
fa <- "y ~ time + arm + ar1(0 + visit | subject) + (1 | rater)"
x05 <- 0.5 / sqrt(1 - 0.5^2)  # ar1: phi = x / sqrt(1 + x^2)
fits$ar1_held_corr_reml <- held(fa, data, TRUE, c(1, x05, 0), c(1, NA, 2),
                                list(`subject: corr` = 0.5))
fits$ar1_held_corr_ml <- held(fa, data, FALSE, c(1, x05, 0), c(1, NA, 2),
                              list(`subject: corr` = 0.5))
fits$ar1_held_rater_reml <- held(fa, data, TRUE, c(1, 0.5, log(1.5)), c(1, 2, NA),
                                 list(`rater: (Intercept)` = 2.25))
ft <- "y ~ time + arm + toep(0 + visit | subject) + (1 | rater)"
x05 <- 0.5 / sqrt(1 - 0.5^2)  # toep: the lag-1 correlation is x / sqrt(1 + x^2)
fits$toep_held_sigma_lag1_reml <- held(ft, data, TRUE, c(0.8, 0.7, 0.7, 0.8, x05, 0.3, 0, 0.3),
                                       c(1, 2, 3, 4, NA, 5, 6, 7),
                                       list(sigma = 1.2, `subject: corr(lag 1)` = 0.5),
                                       betad = log(1.2^2))

out <- list(case = "struct_re", r_version = R.version.string,
            glmmTMB = as.character(packageVersion("glmmTMB")),
            TMB = as.character(packageVersion("TMB")),
            data = list(struct_re = csv, sleepstudy = "datasets/sleepstudy.csv"),
            note = paste("glmmTMB fits, then Newton steps on glmmTMB's objective (TMB gradient, optimHess) from that optimum (max_abs_gradient after them); loglik_default: the default fit.",
                         "loglik is logLik(m) (REML or ML); df counts fixed effects, free",
                         "theta and betad. varcorr: VarCorr(m)$cond as a data frame (vcov,",
                         "sdcor; rows with var2 are correlations in sdcor). se_gls:",
                         "sqrt(diag((X'V^-1X)^-1)) at the estimates (dense V in R). 'held'",
                         "names the parameters held at the given value (variances as",
                         "variances, correlations as correlations) as mixedanova's fixed= names."),
            fits = fits)
cat(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, null = "null"))
