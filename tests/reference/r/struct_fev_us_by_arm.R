# Reference for tests/likelihood/test_mmrm_reference.py::test_group_specific_unstructured_kenward_roger
# (issue 21): mmrm 0.3.18 (built from its source, TMB 1.9.2) on tests/data/struct/fev.csv
# with an unstructured covariance per arm, us(AVISIT | ARMCD / USUBJID), Kenward-Roger,
# tight optimizer.  Run from the project root:
#   Rscript tests/reference/r/struct_fev_us_by_arm.R > tests/reference/struct_fev_us_by_arm.json
suppressMessages(library(mmrm))
d <- read.csv("tests/data/struct/fev.csv", stringsAsFactors = TRUE)
d$AVISIT <- factor(d$AVISIT)
d$USUBJID <- factor(d$USUBJID)
m <- mmrm(FEV1 ~ RACE + SEX + ARMCD * AVISIT + us(AVISIT | ARMCD / USUBJID), data = d,
          control = mmrm_control(method = "Kenward-Roger",
                                 optimizer_control = list(rel.tol = 1e-14)))
cf <- coef(summary(m))
out <- list(case = "struct_fev_us_by_arm", r_version = R.version.string,
            mmrm = as.character(packageVersion("mmrm")),
            r_call = paste("mmrm(FEV1 ~ RACE + SEX + ARMCD * AVISIT + us(AVISIT | ARMCD / USUBJID),",
                           "method = 'Kenward-Roger')"),
            loglik = as.numeric(logLik(m)),
            fixed = list(names = rownames(cf), estimate = unname(cf[, "Estimate"]),
                         se = unname(cf[, "Std. Error"]), df = unname(cf[, "df"])))
cat(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE))
