// placeholder so the folder builds; replaced as the module lands
namespace tg {}
