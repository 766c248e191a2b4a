# Reference for tests/likelihood/test_fixed_sigma.py::test_metafor_three_level (issue 21):
# a three-level meta-analysis, metafor's rma.mv(yi, vi, random = ~ 1 | district/school)
# by REML on dat.konstantopoulos2011 (56 studies in 11 districts), without and with the
# moderator year.  R 4.2.2, metafor (Debian's r-cran-metafor).  Run from the project root:
#   Rscript tests/reference/r/struct_meta_three_level.R > tests/reference/struct_meta_three_level.json
# (it also writes tests/data/struct/konstantopoulos2011.csv).
suppressMessages(library(metafor))
dat <- dat.konstantopoulos2011
write.csv(dat[, c("district", "school", "study", "year", "yi", "vi")],
          "tests/data/struct/konstantopoulos2011.csv", row.names = FALSE)
fits <- list()
for (case in c("intercept", "year")) {
  mods <- if (case == "year") ~ year else ~ 1
  m <- rma.mv(yi, vi, mods = mods, random = ~ 1 | district/school, data = dat,
              method = "REML", control = list(optimizer = "optim", optmethod = "BFGS",
                                              reltol = 1e-14, maxit = 10000))
  X <- model.matrix(mods, dat)
  fits[[case]] <- list(
    sigma2 = unname(m$sigma2), sigma2_names = c("district", "district/school"),
    estimate = unname(coef(m)), se = unname(m$se), names = names(coef(m)),
    loglik = as.numeric(logLik(m)),
    half_logdet_XtX = as.numeric(determinant(crossprod(X))$modulus) / 2)
}
out <- list(case = "struct_meta_three_level", r_version = R.version.string,
            metafor = as.character(packageVersion("metafor")),
            r_call = "rma.mv(yi, vi, mods = ~ 1 | ~ year, random = ~ 1 | district/school, method = 'REML')",
            fits = fits)
cat(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE))
