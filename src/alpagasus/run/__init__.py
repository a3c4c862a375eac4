"""The whole experiment from one recipe: rate, select, train, generate, compare, report."""

from alpagasus.run.recipe import STAGES, RecipeError, load_recipe, run_recipe

__all__ = ["run_recipe", "load_recipe", "RecipeError", "STAGES"]
