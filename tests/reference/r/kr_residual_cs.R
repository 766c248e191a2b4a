# Reference for tests/inference/test_kenward_roger_residual.py (issue 21): a random
# intercept plus a compound-symmetric residual within plots equals lmer's nested random
# intercepts, so Kenward-Roger must equal lmerTest / pbkrtest on
#   yield ~ Variety * nitro_f + (1|Block) + (1|Block:Variety)
# for datasets/oats_unbalanced.csv ("nested").
# R 4.2.2, lme4 1.1-31, lmerTest, pbkrtest.
# Run from the project root:
#   Rscript tests/reference/r/kr_residual_cs.R > tests/reference/kr_residual_cs.json
suppressMessages({library(lme4); library(lmerTest); library(pbkrtest)})
one <- function(m, formula) {
  kr <- summary(m, ddf = "Kenward-Roger")$coefficients
  sat <- summary(m, ddf = "Satterthwaite")$coefficients
  akr <- anova(m, ddf = "Kenward-Roger")
  asat <- anova(m, ddf = "Satterthwaite")
  va <- as.matrix(vcovAdj(m))
  vc <- as.data.frame(VarCorr(m))
  list(r_version = R.version.string, lme4 = as.character(packageVersion("lme4")),
       lmerTest = as.character(packageVersion("lmerTest")),
       pbkrtest = as.character(packageVersion("pbkrtest")),
       formula = formula, reml_criterion = unname(REMLcrit(m)),
       varcorr = list(group = vc$grp, vcov = vc$vcov),
       names = rownames(kr), estimate = unname(kr[, "Estimate"]),
       se_kr = unname(kr[, "Std. Error"]), df_kr = unname(kr[, "df"]),
       df_satterthwaite = unname(sat[, "df"]), vcov_adj = unname(va),
       anova_kr = list(term = rownames(akr), F = unname(akr[, "F value"]),
                       NumDF = unname(akr[, "NumDF"]), DenDF = unname(akr[, "DenDF"])),
       anova_satterthwaite = list(term = rownames(asat), F = unname(asat[, "F value"]),
                                  DenDF = unname(asat[, "DenDF"])))
}
d1 <- read.csv("datasets/oats_unbalanced.csv", stringsAsFactors = TRUE)
m1 <- lmer(yield ~ Variety * nitro_f + (1|Block) + (1|Block:Variety), d1, REML = TRUE)
out <- list(case = "kr_residual_cs",
            nested = one(m1, "yield ~ Variety * nitro_f + (1|Block) + (1|Block:Variety)"))
cat(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE))
