# Reference for tests/batch/test_lmm_many.py::test_five_responses_against_lmertest
# (issue 20): lmerTest's summary of lmer() for each of five responses of
# tests/data/batch/lmm_many_five.csv (made by the project), R 4.2.2, lme4 1.1-31,
# lmerTest (Debian's r-cran-lmertest).  Run from the project root:
#   Rscript tests/reference/r/lmm_many_five.R > tests/reference/lmm_many_five.json
suppressMessages({library(lme4); library(lmerTest)})
d <- read.csv("tests/data/batch/lmm_many_five.csv", stringsAsFactors = TRUE)
fits <- list()
for (g in paste0("g", 1:5)) {
  m <- lmer(as.formula(paste(g, "~ condition + age + (1|donor) + (1|batch)")), d, REML = TRUE)
  cf <- coef(summary(m))
  vc <- as.data.frame(VarCorr(m))
  fits[[g]] <- list(
    reml_criterion = unname(REMLcrit(m)),
    singular = isSingular(m),
    fixed = list(names = rownames(cf), estimate = unname(cf[, "Estimate"]),
                 se = unname(cf[, "Std. Error"]), df = unname(cf[, "df"]),
                 t = unname(cf[, "t value"]), p = unname(cf[, "Pr(>|t|)"])),
    varcorr = list(group = vc$grp, vcov = vc$vcov, sdcor = vc$sdcor))
}
out <- list(case = "lmm_many_five", r_version = R.version.string,
            lme4 = as.character(packageVersion("lme4")),
            lmerTest = as.character(packageVersion("lmerTest")),
            formula = "g ~ condition + age + (1|donor) + (1|batch)", fits = fits)
cat(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE))
